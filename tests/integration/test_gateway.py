"""The gateway on the converged guest, from the controller with the openai client: a streamed
completion arrives in pieces; adding and revoking a client is a reload that drops no stream in
flight and restarts neither HAProxy's master nor a service; a reload HAProxy cannot take is
rolled back; the access log names the client, never its key."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx2
import openai
import pytest
from lab_guest import GUEST, LAYOUT, SERVICES, DeployRun, deploy, on_guest, unit

from llmhost.layout import GATEWAY_UNIT
from llmhost_lab import lab

S = LAYOUT.settings
MODEL = S.services[0].served_model_name


@pytest.fixture(scope="module")
def cafile(converged: DeployRun, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("gateway") / "gateway.crt"
    path.write_text(on_guest(f"cat {LAYOUT.gateway_cert}"))
    return str(path)


def client(key: str, cafile: str) -> openai.OpenAI:
    guest = lab.find(GUEST)
    assert guest is not None
    http = httpx2.Client(verify=ssl.create_default_context(cafile=cafile), timeout=60)
    return openai.OpenAI(
        base_url=f"https://{guest.address}:{S.gateway_port}/v1",
        api_key=key,
        http_client=http,
        max_retries=0,
    )


def key_of(name: str) -> str:
    return on_guest(f"cat {LAYOUT.gateway_key(name)}").strip()


def stream(api: openai.OpenAI, tokens: int) -> Iterator[tuple[float, str]]:
    """(seconds since the request, text) per chunk of a streamed chat completion."""
    start = time.monotonic()
    chunks = api.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a long story."}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
        extra_body={"min_tokens": tokens},
    )
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            yield time.monotonic() - start, chunk.choices[0].delta.content


@dataclass
class Streams:
    """Streams back to back in a thread, so one is in flight whenever the gateway reloads."""

    api: openai.OpenAI
    done: int = 0
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if len(list(stream(self.api, 200))) < 100:
                    self.errors.append("a stream ended early")
                self.done += 1
            except openai.OpenAIError as e:
                self.errors.append(f"{type(e).__name__}: {e}")


def pids() -> dict[str, str]:
    units = [GATEWAY_UNIT, *map(unit, SERVICES)]
    out = on_guest(f"systemctl show -p MainPID --value {' '.join(units)}").split()
    return dict(zip(units, out, strict=True))


def deploy_while_streaming(cafile: str, *args: str) -> tuple[DeployRun, Streams]:
    streams = Streams(client(key_of("lab"), cafile))
    thread = threading.Thread(target=streams.run)
    thread.start()
    try:
        run = deploy(*args)
    finally:
        streams.stop.set()
        thread.join(timeout=120)
    return run, streams


def test_a_streamed_completion_arrives_in_pieces(cafile: str) -> None:
    chunks = list(stream(client(key_of("lab"), cafile), 32))
    for seconds, text in chunks[:8]:
        print(f"{seconds:6.3f} s  {text!r}")
    print(f"... {len(chunks)} chunks in {chunks[-1][0]:.2f} s through the gateway")
    # How many pieces is vLLM's (a busy API server merges deltas); buffered, they would all
    # arrive at once at the end.
    assert len(chunks) >= 2 and chunks[-1][0] > chunks[0][0], "the stream came whole: buffered"


def test_adding_and_revoking_a_client_reloads_without_a_drop(
    start_converged: DeployRun, cafile: str
) -> None:
    # From the lab's own data (a drill before may have left other pins): only the clients change.
    before = pids()
    clients = json.dumps({**S.gateway_clients, "alice": None})
    added, streams = deploy_while_streaming(cafile, "--data", f"llmhost_gateway_clients={clients}")
    assert added.returncode == 0, added.output[-3000:]
    print(f"add alice: {streams.done} streams completed during the deploy, errors {streams.errors}")
    assert streams.done >= 1 and not streams.errors
    alice = key_of("alice")
    assert [m.id for m in client(alice, cafile).models.list()]
    assert pids() == before, "a reload must keep HAProxy's master and every service running"

    revoked, streams = deploy_while_streaming(cafile)
    assert revoked.returncode == 0, revoked.output[-3000:]
    print(f"revoke alice: {streams.done} streams completed, errors {streams.errors}")
    assert streams.done >= 1 and not streams.errors
    with pytest.raises(openai.AuthenticationError):
        client(alice, cafile).models.list()
    assert on_guest(f"test -e {LAYOUT.gateway_key('alice')} || echo gone").strip() == "gone"
    assert [m.id for m in client(key_of("lab"), cafile).models.list()]
    assert pids() == before
    reloads = on_guest(f"journalctl -u {GATEWAY_UNIT} --no-pager -o cat | grep -c Reloaded || true")
    assert int(reloads) >= 2, "the gateway was not reloaded"


def test_a_reload_that_does_not_take_is_rolled_back(
    start_converged: DeployRun, cafile: str
) -> None:
    # A new gateway port taken between preflight and the reload: here by a program in a unit
    # that preflight takes for the deploy's own, so only the live check can see it. systemctl
    # reload succeeds, HAProxy's master keeps the old workers.
    port = S.gateway_port + 1
    squat = f"import socket, time; s = socket.socket(); s.bind(('0.0.0.0', {port})); s.listen(); "
    on_guest(f'systemd-run --unit=llmhost-squatter python3 -c "{squat}time.sleep(900)"')
    try:
        live = on_guest(f"sha256sum < {LAYOUT.gateway_config}")
        before = pids()
        run = deploy("--data", f"llmhost_gateway_port={port}")
        assert run.returncode != 0, run.output[-3000:]
        assert f"{GATEWAY_UNIT}: the reload did not take" in run.output, run.output[-3000:]
        assert "put back its last good config, which runs again" in run.output
        # The file on disk is what runs: the previous config, on the previous port.
        assert on_guest(f"sha256sum < {LAYOUT.gateway_config}") == live
        assert [m.id for m in client(key_of("lab"), cafile).models.list()]
        assert pids() == before, "the rollback must keep HAProxy's master and every service"
        said = next(line for line in run.output.splitlines() if "did not take" in line)
        print(f"\ndrill reload that does not take: {said.strip()}")
    finally:
        on_guest("systemctl stop llmhost-squatter", check=False)


def test_access_log_names_the_client_not_the_key(cafile: str) -> None:
    key = key_of("lab")
    list(client(key, cafile).models.list())
    log = on_guest(f"journalctl -u {GATEWAY_UNIT} --no-pager -o cat -n 50")
    assert 'client="lab"' in log
    assert key not in log


def test_lab_forward_reaches_the_gateway(cafile: str) -> None:
    """`llmhost lab forward` prints the connection data, then the tunnel carries a request."""
    import subprocess

    from lab_guest import BIN

    proc = subprocess.Popen(
        [BIN / "llmhost", "lab", "forward", "--name", GUEST, "--port", "18443"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        printed = [proc.stdout.readline() for _ in range(4)]
        print("".join(printed))
        assert "https://localhost:18443/v1" in printed[0]
        key = key_of("lab")
        assert key not in "".join(printed)
        time.sleep(2)
        http = httpx2.Client(verify=ssl.create_default_context(cafile=cafile), timeout=30)
        api = openai.OpenAI(base_url="https://localhost:18443/v1", api_key=key, http_client=http)
        assert sorted(m.id for m in api.models.list()) == sorted(
            svc.served_model_name for svc in S.services
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
