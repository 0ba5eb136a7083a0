"""The gateway on the converged guest, from the controller with the openai client: a streamed
completion arrives in pieces; adding and revoking a client is a reload that drops no stream in
flight and restarts neither HAProxy's master nor a service; a reload HAProxy cannot take is
rolled back; a team's clients are held to their models and limits, each model to its cap; the
tokens each client used are counted exactly, streams included; the access log names the client
and the forwarded user, never a key."""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx2
import openai
import pytest
from lab_guest import GUEST, LAYOUT, SERVICES, DeployRun, deploy, on_guest, unit
from prometheus_client.parser import text_string_to_metric_families

from llmhost.gateway.config import USAGE_METRICS
from llmhost.layout import GATEWAY_UNIT
from llmhost_lab import lab

S = LAYOUT.settings
MODEL = S.services[0].served_model_name
ALL_NAMES = [name for svc in S.services for name in svc.model_names]


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


def _answers(api: openai.OpenAI, model: str, tokens: int = 1) -> str:
    """One chat request: ``ok`` or the error's class and code."""
    try:
        api.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=tokens,
            extra_body={"min_tokens": tokens},
        )
    except openai.APIStatusError as e:
        code = e.body.get("code") if isinstance(e.body, dict) else None
        retry = e.response.headers.get("retry-after")
        return f"{e.status_code} {code} retry-after={retry}"
    return "ok"


def _burst(
    api: openai.OpenAI, model: str, refused: str, alongside: openai.OpenAI | None = None
) -> tuple[list[str], list[str]]:
    """6 requests at once (and 2 of another client, ``alongside``), again (3 bursts at most)
    until one is ``refused``: a tiny model on an idle lab answers fast enough that one burst may
    never overlap. The answers of the last burst: the client's, the other's."""
    mine: list[str] = []
    theirs: list[str] = []
    for _ in range(3):
        with ThreadPoolExecutor(max_workers=8) as pool:
            sent = [pool.submit(_answers, api, model, 64) for _ in range(6)]
            other = [
                pool.submit(_answers, alongside, model, 64) for _ in range(2 * bool(alongside))
            ]
            mine, theirs = [f.result() for f in sent], [f.result() for f in other]
        if refused in mine:
            break
    return mine, theirs


def _server_peak(service: str) -> int:
    """The most requests HAProxy had at once at a service's server since it last (re)loaded."""
    metrics = on_guest(f"curl -s --noproxy '*' {LAYOUT.gateway_metrics_url}")
    found = re.search(
        rf'haproxy_server_max_sessions{{proxy="{service}",server="{service}"}} (\d+)', metrics
    )
    assert found, metrics[-2000:]
    return int(found.group(1))


def test_a_team_is_held_to_its_models_and_limits(start_converged: DeployRun, cafile: str) -> None:
    try:
        _team_drill(cafile)
    finally:
        # The lab's own data again (a reload): later checks hold the host to that data.
        restored = deploy()
        assert restored.returncode == 0, restored.output[-3000:]


def _team_drill(cafile: str) -> None:
    coder, general = S.services
    team = {
        **S.gateway_clients,
        "ide": {"models": [coder.aliases[0]], "concurrency": 1},
        "script": {"rpm": 3},
    }
    capped = {general.name: {"gateway_max_in_flight": 1}}
    before = pids()
    run, streams = deploy_while_streaming(
        cafile,
        "--data", f"llmhost_gateway_clients={json.dumps(team)}",
        "--data", f"llmhost_service_overrides={json.dumps(capped)}",
    )  # fmt: skip
    assert run.returncode == 0, run.output[-3000:]
    assert pids() == before, "limits are a reload: HAProxy's master and the services keep running"
    print(f"drill team: {streams.done} streams done during the deploy, errors {streams.errors}")
    assert streams.done >= 1 and not streams.errors
    lab_api, ide, script = (client(key_of(n), cafile) for n in ("lab", "ide", "script"))

    # ide: its model by either name, nothing else, and only its model listed.
    assert sorted(m.id for m in ide.models.list()) == sorted(coder.model_names)
    assert _answers(ide, coder.aliases[0]) == "ok", "the alias does not route"
    assert _answers(ide, general.served_model_name).startswith("403 model_not_allowed")

    # ide has one request in flight at most; lab's requests meanwhile are all served.
    ide_says, lab_says = _burst(
        ide, coder.served_model_name, "429 rate_limit retry-after=1", lab_api
    )
    print(
        f"\ndrill team: 6 from ide (1 in flight at most), 2 from lab at once: {ide_says} {lab_says}"
    )
    assert "ok" in ide_says and set(ide_says) == {"ok", "429 rate_limit retry-after=1"}
    assert lab_says == ["ok", "ok"]

    # script: 3 requests a minute; the 4th is refused, lab's are not.
    listed = [len(script.models.list().data) for _ in range(3)]
    with pytest.raises(openai.RateLimitError) as caught:
        script.models.list()
    assert caught.value.response.headers["retry-after"] == "60", caught.value.response.headers
    assert listed == [len(ALL_NAMES)] * 3 and _answers(lab_api, coder.aliases[0]) == "ok"

    # general takes one request at a time from the gateway: a burst beyond it is refused at
    # once, and no more than one request reached vLLM at a time.
    burst, _ = _burst(lab_api, general.served_model_name, "429 model_busy retry-after=1")
    print(f"drill team: a burst of 6 at general (cap 1): {sorted(burst)}")
    assert "ok" in burst and set(burst) == {"ok", "429 model_busy retry-after=1"}, burst
    assert _server_peak(general.name) == 1
    assert _answers(lab_api, coder.served_model_name) == "ok", "the cap is general's alone"

    # The log names the client and the forwarded user (sanitised), never a key.
    http = httpx2.Client(verify=ssl.create_default_context(cafile=cafile), timeout=30)
    shared = openai.OpenAI(
        base_url=f"{lab_api.base_url}",
        api_key=key_of("lab"),
        http_client=http,
        default_headers={"X-OpenWebUI-User-Email": 'ana@example.org" {evil}'},
    )
    assert _answers(shared, coder.served_model_name) == "ok"
    log = on_guest(f"journalctl -u {GATEWAY_UNIT} --no-pager -o cat -n 20")
    line = next(line for line in reversed(log.splitlines()) if "ana@" in line)
    print(f"drill team: {line}")
    assert 'client="lab"' in line and 'user="ana@example.orgevil"' in line, line
    assert all(key_of(n) not in log for n in ("lab", "ide", "script"))


def _counted() -> dict[tuple[str, str, str], float]:
    """The gateway's token counters on the guest: (metric, client, model) -> value."""
    text = on_guest(f"curl -s --noproxy '*' {LAYOUT.gateway_usage_url}")
    return {
        (sample.name, sample.labels["client"], sample.labels["model"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_usage_is_counted_per_client_and_model_exactly(cafile: str) -> None:
    coder, general = S.services
    api = client(key_of("lab"), cafile)
    chat = {"messages": [{"role": "user", "content": "Count to ten."}], "max_tokens": 12}
    before = _counted()
    answered: list[tuple[str, int, int]] = []  # (served model, prompt, completion) per request

    whole = api.chat.completions.create(model=coder.served_model_name, **chat)
    assert whole.usage is not None
    answered.append(
        (coder.served_model_name, whole.usage.prompt_tokens, whole.usage.completion_tokens)
    )

    # A stream that asks for its usage gets it in a last chunk of its own.
    asked = list(
        api.chat.completions.create(
            model=general.served_model_name,
            stream=True,
            stream_options={"include_usage": True},
            **chat,
        )
    )
    assert asked[-1].usage is not None and not asked[-1].choices, asked[-1]
    answered.append(
        (
            general.served_model_name,
            asked[-1].usage.prompt_tokens,
            asked[-1].usage.completion_tokens,
        )
    )

    # One that does not ask gets no such chunk (the gateway takes it out), yet is counted: its
    # chunks carry vLLM's running usage, the last one the total.
    plain = list(api.chat.completions.create(model=coder.aliases[0], stream=True, **chat))
    assert all(chunk.choices for chunk in plain), [c for c in plain if not c.choices]
    last = plain[-1].usage
    assert last is not None, plain[-1]
    answered.append((coder.served_model_name, last.prompt_tokens, last.completion_tokens))

    wanted: dict[str, dict[str, float]] = {}
    for model in {m for m, _, _ in answered}:
        mine = [(p, c) for m, p, c in answered if m == model]
        wanted[model] = {
            USAGE_METRICS["requests"]: len(mine),
            USAGE_METRICS["prompt"]: sum(p for p, _ in mine),
            USAGE_METRICS["completion"]: sum(c for _, c in mine),
        }

    def grew() -> dict[str, dict[str, float]]:
        after = _counted()
        return {
            model: {k: after.get((k, "lab", model), 0) - before.get((k, "lab", model), 0)
                    for k in want}
            for model, want in wanted.items()
        }  # fmt: skip

    # A request is counted once HAProxy has ended its response, which may be after the client
    # read it: wait for every request to be counted, then hold the tokens to exactly.
    requests = USAGE_METRICS["requests"]
    got = grew()
    for _ in range(10):
        if all(got[m][requests] >= w[requests] for m, w in wanted.items()):
            break
        time.sleep(0.2)
        got = grew()
    for model, want in wanted.items():
        print(f"drill usage: lab x {model}: counted {got[model]}, answered {want}")
    assert got == wanted


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
        assert sorted(m.id for m in api.models.list()) == sorted(ALL_NAMES)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
