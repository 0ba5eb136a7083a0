"""Runs ON the checked host: HTTP requests to the services, the load smoke, /proc reads.

The post-deploy checks send this file's source with ``python3 -c SOURCE MODE JSON_ARGS`` (the
services bind 127.0.0.1, so requests must start on the host) and read one JSON document back.
Standard library only, Python ≥ 3.8: it runs under whatever python3 the host has.

Secrets stay on the host: the API key is read from its file here, sent only in request headers,
and never printed; ``environ`` returns just the variables asked for.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

LISTEN = "0A"  # TCP state code of a listening socket in /proc/net/tcp


def _read_key(key_file: str | None) -> str | None:
    """The key from the deploy's ``VLLM_API_KEY=...`` env file (or a file of the bare key)."""
    if not key_file:
        return None
    with open(key_file, encoding="utf-8") as f:
        text = f.read()
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == "VLLM_API_KEY":
            return value.strip().strip("'\"")
    return text.strip()


def http(
    url: str,
    key_file: str | None = None,
    body: Any = None,
    timeout: float = 30.0,
    max_body: int = 4000,
    cafile: str | None = None,
) -> dict[str, Any]:
    """One request; the status is 0 with ``error`` set when no HTTP answer came. ``cafile``:
    the certificate(s) an https URL must be signed by (the gateway's self-signed one)."""
    headers = {"Content-Type": "application/json"}
    key = _read_key(key_file)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    start = time.monotonic()
    try:
        context = ssl.create_default_context(cafile=cafile) if cafile else None
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            status, text, error = response.status, response.read().decode(errors="replace"), None
    except urllib.error.HTTPError as e:
        status, text, error = e.code, e.read().decode(errors="replace"), None
    except (urllib.error.URLError, OSError) as e:
        status, text, error = 0, "", f"{type(e).__name__}: {getattr(e, 'reason', e)}"
    return {
        "status": status,
        "body": text[:max_body],
        "seconds": round(time.monotonic() - start, 4),
        "error": error,
    }


def chat_text(body: str) -> str:
    """The first choice's text of a chat completion response, "" if there is none."""
    try:
        return json.loads(body)["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def load(requests: list[dict[str, Any]], n: int, timeout: float) -> list[dict[str, Any]]:
    """n copies of each request, all in flight at once; one record per request, no bodies."""

    def one(spec: dict[str, Any]) -> dict[str, Any]:
        result = http(
            spec["url"], spec.get("key_file"), spec["body"], timeout, cafile=spec.get("cafile")
        )
        return {
            "service": spec["service"],
            "status": result["status"],
            "seconds": result["seconds"],
            "text_len": len(chat_text(result["body"])) if result["status"] == 200 else 0,
            "error": result["error"] or (result["body"][:200] if result["status"] != 200 else None),
        }

    jobs = [spec for spec in requests for _ in range(n)]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(one, jobs))


def _address(hex_address: str) -> str:
    """/proc/net/tcp{,6} addresses are the kernel's 32-bit words printed in host byte order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, words)


def parse_proc_net_tcp(text: str) -> list[tuple[str, int, int]]:
    """Listening sockets in a /proc/net/tcp{,6} table as (address, port, inode)."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != LISTEN:
            continue
        address, port = fields[1].split(":")
        found.append((_address(address), int(port, 16), int(fields[9])))
    return found


def listening(pids: list[int]) -> list[tuple[str, int]]:
    """TCP (address, port) pairs the given processes listen on (needs root for their fds)."""
    inodes = set()
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                rows = parse_proc_net_tcp(f.read())
        except OSError:
            continue
        found.update((addr, port) for addr, port, inode in rows if inode in inodes)
    return sorted(found)


def environ(pid: int, names: list[str]) -> dict[str, str | None]:
    """Only the named variables of a process's environment (the rest may hold secrets)."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item]
    env = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}
    return {name: env.get(name) for name in names}


def files_containing_key(key_file: str, paths: list[str]) -> list[str]:
    """Which of ``paths`` hold the key in clear (unit files, /proc/PID/cmdline)."""
    key = (_read_key(key_file) or "").encode()
    if not key:
        raise SystemExit(f"{key_file} is empty")
    hits = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                if key in f.read():
                    hits.append(path)
        except OSError:
            continue
    return hits


MODES = {
    "http": http,
    "load": load,
    "listening": listening,
    "environ": environ,
    "files_containing_key": files_containing_key,
}


def main(argv: list[str]) -> None:
    mode, args = argv[0], json.loads(argv[1])
    try:
        answer = MODES[mode](**args)
    except OSError as e:
        # A missing key file or a vanished PID: one line for the check's message, no traceback.
        raise SystemExit(f"{type(e).__name__}: {e}") from None
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
