"""The one agent that runs ON a host for the controller: HTTP requests to the services, the
load smoke, /proc reads and units' processes for the post-deploy checks; the applied plan,
units, Prometheus's answers or raw ``/metrics`` and nvidia-smi for ``llmhost status``.

Both send this file's source with ``python3 -c SOURCE MODE JSON_ARGS`` (``llmhost.remote.run``;
the services bind 127.0.0.1, so requests must start on the host) and read one JSON document
back. Standard library only, Python >= 3.8: it runs under whatever python3 the host has.

Secrets stay on the host: the API key is read from its file here, sent only in request headers,
and never printed; ``environ`` returns just the variables asked for.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

LISTEN = "0A"  # TCP state code of a listening socket in /proc/net/tcp
UNIT_PROPS = ("ActiveState", "SubState", "NRestarts", "MainPID", "ControlGroup")
# Where a unit's cgroup lives: unified (v2), then the hybrid layouts of v1 hosts.
CGROUP_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd")


def _open(request: urllib.request.Request | str, timeout: float, cafile: str | None = None) -> Any:
    """The one way this agent makes a request: never through a proxy the environment names
    (what it asks is on this host, or the gateway as this host reaches it)."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if cafile:
        handlers.append(
            urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile))
        )
    return urllib.request.build_opener(*handlers).open(request, timeout=timeout)


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
        with _open(request, timeout, cafile) as response:
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
    """n copies of each request (or its own ``copies``), all in flight at once; one record per
    request, no bodies."""

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

    jobs = [spec for spec in requests for _ in range(spec.get("copies", n))]
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


def _listening_sockets() -> list[tuple[str, int, int]]:
    """Every listening TCP socket of this network namespace as (address, port, inode)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                found += parse_proc_net_tcp(f.read())
        except OSError:
            continue
    return found


def _socket_inodes(pid: int | str) -> set[int]:
    """The socket inodes a process holds open (needs root for another user's fds)."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return set()
    inodes = set()
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def listening(pids: list[int]) -> list[tuple[str, int]]:
    """TCP (address, port) pairs the given processes listen on."""
    inodes = set().union(*map(_socket_inodes, pids))
    return sorted({(addr, port) for addr, port, inode in _listening_sockets() if inode in inodes})


def _unit_of(pid: int) -> str | None:
    """The systemd unit (service or scope) whose cgroup holds ``pid``."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        for part in line.split(":", 2)[-1].split("/"):
            if part.endswith((".service", ".scope")):
                return part
    return None


def _command_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def listeners() -> list[dict[str, Any]]:
    """Every listening TCP socket: address, port, and the process (PID, name, unit) holding it."""
    owners: dict[int, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for inode in _socket_inodes(pid):
            owners.setdefault(inode, int(pid))
    found = []
    for address, port, inode in _listening_sockets():
        pid = owners.get(inode)
        found.append({
            "address": address, "port": port, "pid": pid,
            "command": _command_of(pid) if pid is not None else None,
            "unit": _unit_of(pid) if pid is not None else None,
        })  # fmt: skip
    return found


def _bound_ports(config: str) -> set[int]:
    """The ports an HAProxy config's ``bind`` lines name."""
    with open(config, encoding="utf-8") as f:
        return {int(m) for m in re.findall(r"^\s*bind\s+\S*:(\d+)", f.read(), re.M)}


def haproxy_took(master: str, config: str) -> dict[str, Any]:
    """HAProxy runs the config at ``config``: every current worker started with it (a worker
    that survived a reload is counted there, and the master keeps the old ones when new
    workers cannot start, e.g. a port they cannot bind), and every port it binds listens."""
    ports = _bound_ports(config)
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    try:
        s.connect(master)
        s.sendall(b"show proc\n")
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    except OSError as e:  # the master re-executes on reload: ask again
        return {"ok": False, "why": f"master CLI {master}: {e}"}
    finally:
        s.close()
    section, workers = "", []
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("#"):
            section = line
        elif section == "# workers" and line.split()[1:2] == ["worker"]:
            workers.append(line.split())
    stale = [w[0] for w in workers if w[2] != "0"]
    missing = sorted(ports - {port for _, port, _ in _listening_sockets()})
    problems = [
        *(["no worker"] if not workers else []),
        *([f"workers from before the last reload: {stale}"] if stale else []),
        *([f"not listening: {missing}"] if missing else []),
    ]
    return {"ok": not problems, "why": "; ".join(problems)}


def unit_listens(unit: str, address: str, port: int) -> dict[str, Any]:
    """A process of ``unit`` listens on ``address:port`` (or on every address at that port):
    an exporter restarted on a new config answers where it was planned, not in a restart loop."""
    held = listening(unit_pids(unit))
    ok = any(p == port and a in (address, "0.0.0.0", "::") for a, p in held)
    why = "" if ok else f"{unit} does not listen on {address}:{port} (it does on {held or 'none'})"
    return {"ok": ok, "why": why}


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


def _get(url: str, timeout: float = 10.0) -> str:
    with _open(url, timeout) as response:
        return response.read().decode(errors="replace")


def cgroup_pids(cgroup: str) -> list[int]:
    """Every process in a cgroup (a unit's ``ControlGroup``) and below it."""
    for root in CGROUP_ROOTS:
        base = root + cgroup
        if not cgroup or not os.path.isdir(base):
            continue
        pids = set()
        for dirpath, _dirs, files in os.walk(base):
            if "cgroup.procs" in files:
                with open(os.path.join(dirpath, "cgroup.procs"), encoding="ascii") as f:
                    pids.update(int(p) for p in f.read().split())
        return sorted(pids)
    return []


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def unit(name: str) -> dict[str, Any]:
    """A unit's systemd state, its processes and their RSS."""
    args = ["systemctl", "show", *(f"-p{p}" for p in UNIT_PROPS), name]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    props: dict[str, Any] = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    props["pids"] = cgroup_pids(props.get("ControlGroup", ""))
    props["rss_bytes"] = _rss(props["pids"])
    return props


def query(prometheus: str, expr: str) -> dict[str, Any]:
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        return json.loads(_get(url))
    except (urllib.error.URLError, OSError, ValueError) as e:
        return {"status": "error", "error": f"{type(e).__name__}: {getattr(e, 'reason', e)}"}


def _metrics(url: str) -> dict[str, Any]:
    try:
        return {"text": _get(url)}
    except (urllib.error.URLError, OSError) as e:
        return {"error": f"{type(e).__name__}: {getattr(e, 'reason', e)}"}


def _smi(commands: dict[str, list[str]]) -> dict[str, Any]:
    found = {}
    for key, argv in commands.items():
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            found[key] = {"rc": result.returncode, "out": result.stdout, "err": result.stderr}
        except (OSError, subprocess.TimeoutExpired) as e:
            found[key] = {"rc": -1, "out": "", "err": str(e)}
    return found


def status(
    plan: str,
    units: dict[str, str],
    prometheus: str | None = None,
    queries: dict[str, str] | None = None,
    metrics: dict[str, str] | None = None,
    smi: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """``llmhost status``: ``plan``: the applied plan's path; ``units``: service -> unit; then
    ``prometheus`` and ``queries`` (key -> PromQL), or ``metrics`` (service -> /metrics URL)
    and ``smi`` (nvidia-smi's command lines)."""
    try:
        with open(plan, encoding="utf-8") as f:
            applied: str | None = f.read()
    except OSError:
        applied = None
    answer: dict[str, Any] = {
        "plan": applied,
        "units": {svc: unit(name) for svc, name in units.items()},
    }
    if prometheus:
        answer["queries"] = {key: query(prometheus, expr) for key, expr in (queries or {}).items()}
    else:
        answer["metrics"] = {svc: _metrics(url) for svc, url in (metrics or {}).items()}
        answer["smi"] = _smi(smi or {})
    return answer


def unit_pids(unit: str) -> list[int]:
    """Every process of ``unit`` (vLLM's API server and its engine core), from its cgroup."""
    out = subprocess.run(
        ["systemctl", "show", "-p", "ControlGroup", "--value", unit], capture_output=True, text=True
    ).stdout
    return cgroup_pids(out.strip())


MODES = {
    "http": http,
    "load": load,
    "listening": listening,
    "listeners": listeners,
    "haproxy_took": haproxy_took,
    "unit_listens": unit_listens,
    "environ": environ,
    "files_containing_key": files_containing_key,
    "status": status,
    "unit_pids": unit_pids,
}


def main(argv: list[str]) -> None:
    mode, args = argv[0], json.loads(argv[1])
    try:
        answer = MODES[mode](**args)
    except OSError as e:
        # A missing key file or a vanished PID: one line for the check's message, no traceback.
        raise SystemExit(f"{type(e).__name__}: {e}") from None
    # One line: a batch of facts marks where each answer ends on the next line.
    print(json.dumps(answer))


if __name__ == "__main__":
    main(sys.argv[1:])
