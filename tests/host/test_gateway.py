"""The gateway as its clients see it: from the controller, with the official ``openai`` client,
over TLS checked against the planned certificate, with a client key read from the host's 0600
file over the SSH connection (never printed: a failure names the client, not the key)."""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from targets import HostTarget, ServiceTarget, fail_on

from llmhost.gateway.config import USAGE_METRICS
from llmhost.layout import GATEWAY_UNIT, GATEWAY_USER
from llmhost.secret_files import read_secret

# Paths vLLM answers without its key, and others that are not on the gateway's list.
OFF_LIST = ("/metrics", "/tokenize", "/detokenize", "/pause", "/invocations", "/v1/x", "/")
# The certificate must outlive this margin (the deploy renews a self-signed one 30 days ahead).
MIN_DAYS_LEFT = 14


@dataclass
class Gateway:
    where: str
    base_url: str
    client_name: str
    # Never in a repr: pytest shows reprs in failure reports.
    key: str = field(repr=False)
    cafile: str | None = None

    @property
    def verify(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cafile)

    def client(self, key: str | None = None, timeout: float = 60.0) -> openai.OpenAI:
        http = httpx.Client(verify=self.verify, timeout=timeout)
        return openai.OpenAI(
            base_url=f"{self.base_url}/v1", api_key=key or self.key, http_client=http,
            max_retries=0,
        )  # fmt: skip

    def get(self, path: str, key: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key if key is None else key}"}
        with httpx.Client(verify=self.verify, timeout=10) as http:
            return http.get(f"{self.base_url}{path}", headers=headers)


def _client_key(target: HostTarget) -> tuple[str, str]:
    """One client's name and key: a controller file's, else one generated on the host."""
    if not target.settings.gateway_clients:
        pytest.fail(f"{target.name}: llmhost_gateway_clients is empty: no key to check with")
    clients = target.check_clients
    for name, path in sorted(clients.items(), key=lambda kv: kv[1] is None):
        if path:
            return name, read_secret(path)
        result = target.run("cat %s", target.layout.gateway_key(name))
        if result.rc == 0 and result.stdout.strip():
            return name, result.stdout.strip()
    pytest.fail(f"{target.name}: no client key readable; run the deploy", pytrace=False)


def _gateway(target: HostTarget, tmp: Path) -> Gateway:
    s = target.settings
    if not s.gateway:
        pytest.skip(f"{target.name}: llmhost_gateway = False")
    name, key = _client_key(target)
    scheme = "https" if s.gateway_tls else "http"
    cafile: str | None = None
    if s.gateway_tls and not s.tls_cert_file:
        # The self-signed certificate is public: trust exactly it, as a client would.
        pem = tmp / f"{target.name}-gateway.crt"
        pem.write_text(target.output("cat %s", target.layout.gateway_cert))
        cafile = str(pem)
    host = f"[{target.address}]" if ":" in target.address else target.address
    return Gateway(target.name, f"{scheme}://{host}:{s.gateway_port}", name, key, cafile)


@pytest.fixture
def gw(target: HostTarget, tmp_path: Path) -> Gateway:
    return _gateway(target, tmp_path)


@pytest.fixture
def service_gw(service: ServiceTarget, tmp_path: Path) -> Gateway:
    return _gateway(service.target, tmp_path)


def test_gateway_running(target: HostTarget) -> None:
    if not target.settings.gateway:
        pytest.skip("llmhost_gateway = False")
    unit = target.host.service(GATEWAY_UNIT)
    fail_on(
        [f"{target.name}: {GATEWAY_UNIT} is not running; run the deploy"] * (not unit.is_running)
        + [f"{target.name}: {GATEWAY_UNIT} is not enabled"] * (not unit.is_enabled)
    )


def test_gateway_secret_files(target: HostTarget) -> None:
    if not target.settings.gateway:
        pytest.skip("llmhost_gateway = False")
    layout = target.layout
    want = {layout.gateway_clients_map: GATEWAY_USER}
    if target.settings.gateway_tls:
        want[layout.gateway_pem] = GATEWAY_USER
    for name, client in target.settings.clients.items():
        if not client.key_file:
            want[layout.gateway_key(name)] = "root"
    problems = []
    for path, owner in want.items():
        f = target.host.file(path)
        if not f.exists or f.mode != 0o600 or f.user != owner:
            problems.append(f"{target.name}: {path} must be 0600 owned by {owner}; run the deploy")
    fail_on(problems)


def test_gateway_lists_every_model(gw: Gateway, target: HostTarget) -> None:
    listed = sorted(model.id for model in gw.client().models.list())
    settings = target.settings
    want = sorted(n for svc in target.plan.by_service() for n in settings.service(svc).model_names)
    if listed != want:
        fail_on([f"{gw.where}: {gw.base_url}/v1/models lists {listed}, want {want}"])


def test_gateway_health(gw: Gateway, target: HostTarget) -> None:
    answer = gw.get("/health", key="-")
    up = answer.json().get("up", {}) if answer.status_code in (200, 503) else {}
    down = [svc.served_model_name for svc in target.plan.services.values()
            if not up.get(svc.served_model_name)]  # fmt: skip
    if answer.status_code != 200 or down:
        fail_on([f"{gw.where}: /health answered {answer.status_code} {answer.text[:200]}"])


def test_gateway_chat(service_gw: Gateway, service: ServiceTarget, request_timeout: float) -> None:
    name = service.planned.served_model_name
    reply = service_gw.client(timeout=request_timeout).chat.completions.create(
        model=name,
        messages=[{"role": "user", "content": "Say hello in five words."}],
        max_tokens=16,
        temperature=0,
        extra_body={"min_tokens": 4},
    )
    text = reply.choices[0].message.content or ""
    if reply.model != name or not text.strip():
        fail_on([f"{service.where}: through the gateway, model {reply.model!r} said {text!r}"])


def test_gateway_streams_a_whole_completion(
    gw: Gateway, target: HostTarget, request_timeout: float
) -> None:
    """A stream through the gateway arrives whole: every token vLLM counted, then its end. How
    many pieces it comes in is vLLM's (a busy API server merges the deltas its reader has not
    taken yet: seen as one piece on a loaded host), so it is not asserted here."""
    model = next(iter(target.plan.services.values())).served_model_name
    tokens = 16
    stream = gw.client(timeout=request_timeout).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Count from one to twenty."}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"min_tokens": tokens},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    counted = usage.completion_tokens if usage else None
    if not text or finish != "length" or counted != tokens:
        fail_on([
            f"{gw.where}: a streamed completion of {tokens} tokens arrived as {len(text)} "
            f"characters, finish_reason {finish!r}, usage {counted!r} tokens"
        ])  # fmt: skip


def _counted(target: HostTarget, client: str, model: str) -> dict[str, float]:
    """The gateway's token counters for one client and model (its metrics port's /usage)."""
    url = target.layout.gateway_usage_url
    # The agent's request, not curl's: a proxy in the host's environment must not take it.
    answer = target.probe("http", url=url, max_body=1_000_000, timeout=10)
    if answer["status"] != 200:
        pytest.fail(
            f"{target.name}: {url} answered {answer['status']} {answer['error'] or ''}",
            pytrace=False,
        )
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(answer["body"])
        for sample in family.samples
        if sample.labels.get("client") == client and sample.labels.get("model") == model
    }


def test_gateway_counts_the_tokens_it_answers(
    gw: Gateway, target: HostTarget, request_timeout: float
) -> None:
    """The client's counters grow by at least what an answer reported (more if other requests
    with the same key came meanwhile; the lab drill holds them to exactly)."""
    model = next(iter(target.plan.services.values())).served_model_name
    before = _counted(target, gw.client_name, model)
    reply = gw.client(timeout=request_timeout).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0
    )
    assert reply.usage is not None
    want = {
        USAGE_METRICS["requests"]: 1,
        USAGE_METRICS["prompt"]: reply.usage.prompt_tokens,
        USAGE_METRICS["completion"]: reply.usage.completion_tokens,
    }
    grew: dict[str, float] = {}
    for _ in range(10):  # counted once HAProxy has ended the response, maybe after we read it
        after = _counted(target, gw.client_name, model)
        grew = {k: after.get(k, 0) - before.get(k, 0) for k in want}
        if all(grew[k] >= v for k, v in want.items()):
            return
        time.sleep(0.2)
    fail_on(
        [f"{gw.where}: usage counters of {gw.client_name!r} x {model!r} grew {grew}, want {want}"]
    )


def test_gateway_refuses_a_wrong_key(gw: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        gw.client(key=secrets.token_urlsafe(32)).models.list()
    with httpx.Client(verify=gw.verify, timeout=10) as http:
        status = http.get(f"{gw.base_url}/v1/models").status_code
    if status != 401:
        fail_on([f"{gw.where}: /v1/models without a key answered {status}, want 401"])


def test_gateway_bounds_request_headers(gw: Gateway, target: HostTarget) -> None:
    # The buffer is sized for the largest body: without its own bound a 64 KB header got in.
    headers = {"Authorization": f"Bearer {gw.key}", "X-Padding": "a" * 64 * 1024}
    with httpx.Client(verify=gw.verify, timeout=10) as http:
        status = http.get(f"{gw.base_url}/v1/models", headers=headers).status_code
    if status != 431:
        fail_on([f"{gw.where}: a 64 KB request header answered {status}, want 431"])


def test_gateway_unknown_model_is_404(gw: Gateway, target: HostTarget) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        gw.client().chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}], max_tokens=1
        )
    names = [svc.served_model_name for svc in target.plan.services.values()]
    missing = [n for n in names if n not in str(caught.value)]
    if missing:
        fail_on([f"{gw.where}: the 404 does not list {missing}: {caught.value}"])


@pytest.mark.parametrize("path", OFF_LIST)
def test_gateway_off_list_path_is_404(gw: Gateway, path: str) -> None:
    status = gw.get(path).status_code
    if status != 404:
        fail_on([f"{gw.where}: GET {path} with a valid key answered {status}, want 404"])


def test_only_the_gateway_port_answers_from_outside(target: HostTarget) -> None:
    s = target.settings
    if not s.gateway:
        pytest.skip("llmhost_gateway = False")
    if _loopback(target.address):
        # Seen on the GPU test machine, whose controller shares the host's network.
        pytest.skip(f"{target.address} is this machine's loopback: every port answers from here")
    ports = {svc.name: svc.port for svc in s.instances}
    ports["gateway metrics"] = s.gateway_metrics_port
    open_ = [f"{what} ({port})" for what, port in ports.items() if _connects(target.address, port)]
    problems = [f"{target.name}: {', '.join(open_)} answer(s) from outside the host"] * bool(open_)
    if not _connects(target.address, s.gateway_port):
        problems.append(f"{target.name}: the gateway port {s.gateway_port} does not answer")
    fail_on(problems)


def _loopback(address: str) -> bool:
    try:
        resolved = socket.getaddrinfo(address, None)[0][4][0]
    except OSError:
        return False
    return ipaddress.ip_address(resolved).is_loopback


def _connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=3):
            return True
    except OSError:
        return False


def test_gateway_certificate_is_the_planned_one(target: HostTarget) -> None:
    s = target.settings
    if not (s.gateway and s.gateway_tls):
        pytest.skip("no TLS on this gateway")
    planned = s.tls_cert_file and Path(s.tls_cert_file).read_text()
    planned = planned or target.output("cat %s", target.layout.gateway_cert)
    served = _served_certificate(target.address, s.gateway_port)
    digest = [hashlib.sha256(der).hexdigest() for der in (_leaf_der(planned), served)]
    problems = [f"{target.name}: the gateway serves another certificate than planned"] * (
        digest[0] != digest[1]
    )
    left = _days_left(target, target.layout.gateway_cert)
    if left < MIN_DAYS_LEFT:
        problems.append(f"{target.name}: the gateway certificate expires in {left} days; renew it")
    fail_on(problems)


def _served_certificate(address: str, port: int) -> bytes:
    """The leaf certificate the gateway presents (DER), whoever signed it."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection((address, port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _leaf_der(chain: str) -> bytes:
    """The first certificate of a PEM chain, as DER."""
    end = "-----END CERTIFICATE-----"
    return ssl.PEM_cert_to_DER_cert(chain[: chain.index(end) + len(end)].strip() + "\n")


def _days_left(target: HostTarget, path: str) -> int:
    end = target.output("openssl x509 -noout -enddate -in %s", path).strip()
    text = " ".join(end.removeprefix("notAfter=").split())
    not_after = datetime.strptime(text, "%b %d %H:%M:%S %Y GMT").replace(tzinfo=UTC)
    return (not_after - datetime.now(UTC)).days
