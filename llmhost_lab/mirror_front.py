"""The front of the lab's hub mirror: what guests talk to, in front of Olah (``mirror``).

It passes every GET, HEAD and POST on to Olah and adds what Olah's local git mirror mode lacks and a
site's mirror or the hub's CDN has: a ``Range: bytes=N-`` GET is answered 206 with the rest
only (Olah answers the whole file, so an interrupted download would start over), and a gated
repo (``gated.json``: repo -> sha256 of its token) is served only with its bearer token
(else 401 ``GatedRepo``, as the hub answers). Only lab guests and this machine may ask. Each
answer is logged to ``served.jsonl`` with the bytes sent (never a header).

    python -m llmhost_lab.mirror_front LISTEN_ADDR:PORT UPSTREAM_ADDR:PORT STATE_DIR
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHUNK = 1 << 16
CLIENTS = (ipaddress.ip_network("10.231.0.0/16"), ipaddress.ip_network("127.0.0.0/8"))
# The repo a request is about: /api/models/ORG/NAME/..., or /ORG/NAME/resolve/...
REPO = re.compile(r"^/(?:api/models/)?([^/]+/[^/?]+)")
RANGE = re.compile(r"^bytes=(\d+)-$")
# Host too: Olah builds its redirects (a tree listing's trailing slash) from it.
FORWARDED = ("host", "accept", "accept-encoding", "user-agent", "content-type")
GATED = {
    "X-Error-Code": "GatedRepo",
    "X-Error-Message": "Access to this model is restricted: authenticate with your token",
}


class Front(BaseHTTPRequestHandler):
    upstream: tuple[str, int]
    state: Path
    lock = threading.Lock()

    def do_HEAD(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        # The hub API's paths-info is a POST of a form.
        self._serve()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: ``served.jsonl`` says what was served."""

    def _serve(self) -> None:
        self.began = time.monotonic()
        client = ipaddress.ip_address(self.client_address[0])
        if not any(client in net for net in CLIENTS):
            return self._refuse(403, {}, "only lab guests may use the lab's mirror")
        if not self._allowed():
            return self._refuse(401, GATED, "this repo is gated: send its token")
        start = self._range_start()
        # Olah streams a GET without its length; its HEAD has it.
        total = self._length() if start is not None else None
        conn = http.client.HTTPConnection(*self.upstream, timeout=300)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        conn.request(self.command, self.path, body=body, headers=self._forwarded())
        answer = conn.getresponse()
        status, sent = self._relay(answer, start, total)
        conn.close()
        self._log(status, sent, start)

    def _forwarded(self) -> dict[str, str]:
        return {k: v for k, v in self.headers.items() if k.lower() in FORWARDED}

    def _length(self) -> int:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        conn.request("HEAD", self.path, headers=self._forwarded())
        length = conn.getresponse().headers.get("content-length")
        conn.close()
        return int(length) if length and length.isdigit() else -1

    def _allowed(self) -> bool:
        repo = REPO.match(self.path)
        gated = json.loads(p.read_text()) if (p := self.state / "gated.json").exists() else {}
        want = gated.get(repo[1]) if repo else None
        if want is None:
            return True
        token = self.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return hashlib.sha256(token.encode()).hexdigest() == want

    def _range_start(self) -> int | None:
        found = RANGE.match(self.headers.get("range", ""))
        return int(found[1]) if found and self.command == "GET" else None

    def _relay(
        self, answer: http.client.HTTPResponse, start: int | None, total: int | None
    ) -> tuple[int, int]:
        """Send Olah's answer on; a ranged one from byte ``start`` of ``total``. The status
        and the bytes sent."""
        length = int(answer.headers.get("content-length") or -1)
        status, skip = answer.status, 0
        if start is not None and total is not None and status == 200 and 0 <= start < total:
            status, skip, length = 206, start, total - start
            self.send_response(status)
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        else:
            self.send_response(status)
        for key, value in answer.headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "date"):
                self.send_header(key, value)
        if length >= 0:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        return status, 0 if self.command == "HEAD" else self._copy(answer, skip)

    def _copy(self, answer: http.client.HTTPResponse, skip: int) -> int:
        sent = 0
        try:
            while chunk := answer.read(CHUNK):
                if skip:
                    drop = min(skip, len(chunk))
                    chunk, skip = chunk[drop:], skip - drop
                self.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            # The client went away (a download killed half-way): what it got is logged.
            self.close_connection = True
        return sent

    def _refuse(self, status: int, headers: dict[str, str], message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        for key, value in {**headers, "Content-Type": "application/json"}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self._log(status, 0, None)

    def _log(self, status: int, sent: int, start: int | None) -> None:
        line = {
            "t": round(time.time(), 3),
            "client": self.client_address[0],
            "method": self.command,
            "path": self.path.split("?", 1)[0],
            "status": status,
            "bytes": sent,
            "from": start,
            "s": round(time.monotonic() - self.began, 3),
        }
        with self.lock, (self.state / "served.jsonl").open("a") as log:
            log.write(json.dumps(line) + "\n")


def main(listen: str, upstream: str, state: str) -> None:
    host, port = listen.rsplit(":", 1)
    up_host, up_port = upstream.rsplit(":", 1)
    Front.upstream = (up_host, int(up_port))
    Front.state = Path(state)
    ThreadingHTTPServer((host, int(port)), Front).serve_forever()


if __name__ == "__main__":
    main(*sys.argv[1:])
