"""llmhost.remote.agent, the part of the checks that runs on the host: against a local fake
server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmhost.remote import agent as probe

KEY = "sk-test-0123456789"

# A /proc/net/tcp and a /proc/net/tcp6 as the kernel prints them (trailing columns cut).
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 4101 1
   1: 0100007F:1F41 0100007F:C350 01 00000000:00000000 00:00000000 00000000   999        0 4102 1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1
"""
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F42 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 4201 1
   1: 00000000000000000000000001000000:B0A3 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 4202 1
"""  # noqa: E501


def test_parse_proc_net_tcp_listeners_only() -> None:
    assert probe.parse_proc_net_tcp(PROC_NET_TCP) == [
        ("127.0.0.1", 8001, 4101),
        ("0.0.0.0", 22, 17),
    ]
    assert probe.parse_proc_net_tcp(PROC_NET_TCP6) == [("::", 8002, 4201), ("::1", 45219, 4202)]


def test_listening_finds_this_process_socket() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert ("127.0.0.1", port) in probe.listening([os.getpid()])


def test_listeners_name_the_process_holding_each_socket() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        mine = [s for s in probe.listeners() if s["port"] == port]
    assert mine and mine[0]["pid"] == os.getpid() and mine[0]["address"] == "127.0.0.1"
    with open(f"/proc/{os.getpid()}/comm", encoding="utf-8") as f:
        assert mine[0]["command"] == f.read().strip()


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ('{"choices": [{"message": {"content": "hi there"}}]}', "hi there"),
        ('{"choices": [{"message": {"content": null}}]}', ""),
        ('{"choices": []}', ""),
        ("<html>502</html>", ""),
    ],
)
def test_chat_text(body: str, text: str) -> None:
    assert probe.chat_text(body) == text


class FakeVllm(BaseHTTPRequestHandler):
    """Just enough of vLLM's OpenAI server: open /health, key-guarded /v1."""

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, doc: object) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply(200, {})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            self._reply(401, {"error": "Unauthorized"})
        else:
            self._reply(200, {"choices": [{"message": {"content": "hello"}}]})


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeVllm)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(params=[f"VLLM_API_KEY={KEY}\n", f"{KEY}\n"], ids=["env-file", "bare-key"])
def key_file(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The deploy's api_key.env, or a file holding just the key."""
    path = tmp_path / "api_key.env"
    path.write_text(request.param)
    return str(path)


def test_http_with_and_without_key(server: str, key_file: str) -> None:
    url = f"{server}/v1/chat/completions"
    assert probe.http(url, key_file, {"model": "m"})["status"] == 200
    assert probe.http(url, None, {"model": "m"})["status"] == 401


def test_http_refused_is_status_zero() -> None:
    result = probe.http("http://127.0.0.1:9/health", timeout=2)
    assert result["status"] == 0
    assert "Connection refused" in result["error"]


def test_load_sends_n_per_service_at_once(server: str, key_file: str) -> None:
    spec = {"url": f"{server}/v1/chat/completions", "key_file": key_file, "body": {}}
    records = probe.load([{**spec, "service": "coder"}, {**spec, "service": "general"}], 3, 5)
    assert len(records) == 6
    assert {(r["service"], r["status"], r["text_len"]) for r in records} == {
        ("coder", 200, 5),
        ("general", 200, 5),
    }
    # A request's own count (a model capped at the gateway) takes the place of n.
    records = probe.load([{**spec, "service": "coder", "copies": 1}], 3, 5)
    assert [r["service"] for r in records] == ["coder"]


def test_runs_as_python_c_and_keeps_secrets_home(tmp_path: Path, key_file: str) -> None:
    """The checks run ``python3 -c SOURCE MODE JSON``: no imports from llmhost on the host."""
    leaky = tmp_path / "unit"
    leaky.write_text(f"Environment=VLLM_API_KEY={KEY}\n")
    clean = tmp_path / "clean"
    clean.write_text("EnvironmentFile=/etc/llmhost/coder.env\n")
    args = {"key_file": key_file, "paths": [str(leaky), str(clean), "/nonexistent"]}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            Path(probe.__file__).read_text(),
            "files_containing_key",
            json.dumps(args),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert json.loads(out.stdout) == [str(leaky)]
    assert KEY not in out.stdout + out.stderr


def test_environ_returns_only_the_names_asked() -> None:
    env = probe.environ(os.getpid(), ["PATH", "LLMHOST_SURELY_UNSET"])
    assert env == {"PATH": os.environ["PATH"], "LLMHOST_SURELY_UNSET": None}


def test_missing_key_file_is_one_line(tmp_path: Path) -> None:
    args = {"url": "http://127.0.0.1:9/", "key_file": str(tmp_path / "absent")}
    out = subprocess.run(
        [sys.executable, "-c", Path(probe.__file__).read_text(), "http", json.dumps(args)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert out.stderr.strip().startswith("FileNotFoundError: [Errno 2] No such file")
    assert "Traceback" not in out.stderr


def test_a_proxy_in_the_environment_is_never_used(
    server: str, key_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dead proxy, as a host's /etc/environment or a sudo keeping variables would hand it over.
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert probe.http(f"{server}/v1/chat/completions", key_file, {"model": "m"})["status"] == 200
    answer = probe.status(plan="/nonexistent", units={}, metrics={"coder": f"{server}/metrics"})
    assert answer["metrics"]["coder"] == {"text": "{}"}
