"""The gateway without a host: the rendered HAProxy config as the real ``haproxy -c`` judges it,
the request-buffer sizing, the map of key hashes, and the controller-side refusals."""

from __future__ import annotations

import hashlib
import shutil
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from llmhost.applied_plan import AppliedPlan, AppliedService
from llmhost.gateway import config as gateway
from llmhost.gateway import rules as gateway_checks
from llmhost.gateway.facts import KeyHashes, parse_x509_text
from llmhost.remote import agent
from llmhost.render import render
from llmhost.settings import Settings, SettingsError, group_settings

ROOT = Path(__file__).resolve().parents[2]
HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)
KEY = "k3y-0f-a11ce-0123456789abcdef"


def _plan(settings: Settings) -> AppliedPlan:
    return AppliedPlan(
        gpu=False,
        gpu_memory_cap=0.9,
        services={
            svc.name: AppliedService(
                name=svc.name,
                unit=f"llmhost-{svc.name}.service",
                port=svc.port,
                bind_host=settings.bind_host,
                served_model_name=svc.served_model_name,
                max_model_len=svc.max_model_len,
                gpu_memory_utilization=None,
                cpu_kv_cache_gib=1,
                kv_tokens=1024,
                replica_of=svc.replica_of,
            )
            for svc in settings.instances
        },
    )


def _cert_pair(tmp: Path, days: int = 30, other_key: bool = False) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw.example")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=400))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    signer = ec.generate_private_key(ec.SECP256R1()) if other_key else key
    cert_path, key_path = tmp / "gw.crt", tmp / "gw.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        signer.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# A team: limits per client, one client held to one model, aliases and a cap on one service.
TEAM: dict[str, Any] = {
    "lab": None,
    "ide": {"models": ["coder-alias"], "concurrency": 2},
    "script": {"key_file": None, "rpm": 30},
}
ALIASED = [
    {**svc, **extra}
    for svc, extra in zip(
        group_settings(ROOT, "lab").model_dump()["services"],
        ({"aliases": ["coder-alias", "gpt-4o"]}, {"gateway_max_in_flight": 3}),
        strict=True,
    )
]


# The team's services, general in two replicas (its cap is the model's, over both).
REPLICATED = [ALIASED[0], {**ALIASED[1], "replicas": 2, "cpu_threads_bind": ["1", "0"]}]


def _rendered(tmp: Path, **data: Any) -> Path:
    """The lab's config, rendered with its files in ``tmp`` so ``haproxy -c`` can load them."""
    lab = group_settings(ROOT, "lab").model_dump()
    settings = Settings.model_validate({**lab, **data})
    ctx = gateway.context(settings, _plan(settings))
    cert, key = _cert_pair(tmp)
    pem = tmp / "tls.pem"
    pem.write_text(cert.read_text() + key.read_text())
    (tmp / "clients.map").write_text(gateway.clients_map({"alice": gateway.key_hash(KEY)}))
    ctx["g"]["pem"], ctx["g"]["clients_map"] = str(pem), str(tmp / "clients.map")
    ctx["g"]["lua"] = str(ROOT / "llmhost/gateway/gateway.lua")
    path = tmp / "haproxy.cfg"
    path.write_text(render("gateway/haproxy.cfg.j2", ctx))
    return path


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed: apt-get install haproxy")
@pytest.mark.parametrize(
    "data",
    [
        {},
        {"gateway_tls": False},
        {"gateway_rate_limit": 120, "gateway_bind": "::"},
        {"gateway_bind": "192.0.2.10", "gateway_port": 443},
        {"gateway_clients": TEAM, "services": ALIASED},
        {"gateway_clients": TEAM, "services": REPLICATED},
    ],
    ids=["lab", "plain-http", "rate-limit-ipv6", "one-address", "team", "replicas"],
)
def test_rendered_config_passes_haproxy_check(tmp_path: Path, data: dict[str, Any]) -> None:
    assert HAPROXY is not None
    config = _rendered(tmp_path, **data)
    result = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # No warning either: each is a rule HAProxy would not apply as written.
    assert "WARNING" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_config_routes_each_model_and_never_holds_the_key(tmp_path: Path) -> None:
    text = _rendered(tmp_path).read_text()
    assert (
        "set-var(txn.service) str(coder) if { var(txn.model) -m str tiny-coder code-assistant }"
        in text
    )
    assert "set-var(txn.service) str(general) if { var(txn.model) -m str tiny-general }" in text
    assert "use_backend %[var(txn.service)] if { var(txn.service) -m found }" in text
    # No limit asked for, none in the config.
    assert "stick-table" not in text and "429" not in text and "403" not in text
    assert "server coder 127.0.0.1:8001 check" in text
    assert '"Bearer ${VLLM_API_KEY}"' in text
    assert KEY not in text and gateway.key_hash(KEY) not in text
    assert "bind 127.0.0.1:8404" in text and "prometheus-exporter" in text


def test_replicas_are_one_backend_balanced_by_least_connections(tmp_path: Path) -> None:
    text = _rendered(tmp_path, gateway_clients=TEAM, services=REPLICATED).read_text()
    backend = text.split("backend general\n", 1)[1].split("\n\n", 1)[0]
    assert "balance leastconn" in backend and "option httpchk GET /health" in backend
    servers = [line.split()[1:3] for line in backend.splitlines() if "server " in line]
    assert servers == [["general", "127.0.0.1:8002"], ["general-2", "127.0.0.1:8003"]]
    # The model is routed, capped and listed once, by the service's name.
    assert text.count("set-var(txn.service) str(general) if") == 1
    assert "str(general-2)" not in text and "backend general-2" not in text
    assert "{ var(txn.service) -m str general } { sc_conn_cur(1) gt 3 }" in text
    assert text.count('"id":"tiny-general"') == 1  # in the full list only (ide's has none)


def test_team_config_holds_each_client_and_model_to_its_limits(tmp_path: Path) -> None:
    text = _rendered(tmp_path, gateway_clients=TEAM, services=ALIASED).read_text()
    rules = [line.strip() for line in text.splitlines()]
    assert (
        "set-var(txn.service) str(coder) if { var(txn.model) -m str tiny-coder coder-alias gpt-4o }"
    ) in text
    # ide may use the coder by any of its names, and sees only those in /v1/models.
    ide = [r for r in rules if "{ var(txn.client) -m str ide }" in r]
    assert any(
        r.startswith("http-request return status 403")
        and "!{ var(txn.model) -m str tiny-coder coder-alias gpt-4o }" in r
        for r in ide
    ), ide
    listed = next(r for r in ide if "models_path METH_GET" in r)
    assert '"id":"gpt-4o"' in listed and "tiny-general" not in listed
    assert any("{ sc_conn_cur(0) gt 2 }" in r and "Retry-After 1" in r for r in ide), ide
    script = [r for r in rules if "{ var(txn.client) -m str script }" in r]
    assert len(script) == 1 and "{ sc_http_req_rate(0) gt 30 }" in script[0], script
    # lab has no limit: no rule names it.
    assert not [r for r in rules if "-m str lab }" in r]
    assert any("{ var(txn.service) -m str general } { sc_conn_cur(1) gt 3 }" in r for r in rules), (
        rules
    )
    # The full list carries the aliases.
    full = next(r for r in rules if r.endswith("if models_path METH_GET"))
    assert '"id":"coder-alias"' in full and '"id":"tiny-general"' in full


def test_usage_counter_names_are_the_ones_the_lua_serves() -> None:
    lua = (ROOT / "llmhost/gateway/gateway.lua").read_text()
    for metric in gateway.USAGE_METRICS.values():
        assert f'"{metric}"' in lua


def test_aliases_are_served_model_names_too() -> None:
    lab = group_settings(ROOT, "lab").model_dump()
    settings = Settings.model_validate({**lab, "services": ALIASED})
    assert settings.service("coder").model_names == ["tiny-coder", "coder-alias", "gpt-4o"]


def test_request_buffer_holds_the_largest_prompt() -> None:
    assert gateway.max_body_bytes(32768) == 32768 * 16 + 64 * 1024
    size = gateway.bufsize(32768)
    assert size % (16 * 1024) == 0
    assert size >= gateway.max_body_bytes(32768) + gateway.MAXREWRITE_BYTES


def test_clients_map_is_sorted_hashes_haproxy_computes() -> None:
    digest = gateway.key_hash(KEY)
    shell = subprocess.run(
        ["sha256sum"], input=KEY, capture_output=True, text=True, check=True
    ).stdout.split()[0]
    assert digest == shell == hashlib.sha256(KEY.encode()).hexdigest()
    assert gateway.clients_map({"zed": "b" * 64, "alice": "a" * 64}) == (
        f"{'a' * 64} alice\n{'b' * 64} zed\n"
    )


def test_models_list_comes_from_the_plan() -> None:
    settings = group_settings(ROOT, "lab")
    names = {svc.name: tuple(svc.model_names) for svc in settings.services}
    listed = gateway.models_json(_plan(settings), names)
    assert '"id":"tiny-coder"' in listed and '"id":"tiny-general"' in listed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"llmhost_gateway_port": 8001}, "llmhost_gateway_port 8001 is also service 'coder'"),
        ({"llmhost_gateway_metrics_port": 8002}, "llmhost_gateway_metrics_port 8002 is also"),
        (
            {"llmhost_gateway_metrics_port": 443},
            "llmhost_gateway_metrics_port 443 is also llmhost_gateway_port",
        ),
        ({"llmhost_gateway_clients": {"Alice Smith": None}}, "client name 'Alice Smith'"),
        ({"llmhost_tls_cert_file": "/x.crt"}, "llmhost_tls_cert_file and llmhost_tls_key_file"),
        ({"llmhost_tls_names": ["not a name"]}, "'not a name' is neither a host name"),
        ({"llmhost_gateway_bind": "gw.example"}, "llmhost_gateway_bind: 'gw.example' is not an IP"),
        (
            {"llmhost_gateway_clients": {"ide": {"models": ["gpt-5"]}}},
            "llmhost_gateway_clients['ide'].models: 'gpt-5' is not a model this host serves",
        ),
        (
            {"llmhost_gateway_clients": {"ide": {"rpm": 0}}},
            "llmhost_gateway_clients['ide'].rpm: Input should be greater than or equal to 1",
        ),
        (
            {"llmhost_gateway_clients": {"ide": {"concurrency": "many"}}},
            "llmhost_gateway_clients['ide'].concurrency: Input should be a valid integer",
        ),
        (
            {"llmhost_gateway_clients": {"ide": {"modles": ["x"]}}},
            "llmhost_gateway_clients['ide'].modles: unknown key (did you mean models?)",
        ),
        (
            {
                "llmhost_service_overrides": {
                    "general": {"aliases": ["deepseek-coder-33b-instruct"]}
                }
            },
            "the model name 'deepseek-coder-33b-instruct': services 'coder' and 'general' both",
        ),
        (
            {"llmhost_service_overrides": {"coder": {"aliases": ["x", "x"]}}},
            "the model name 'x': service 'coder' lists it twice",
        ),
        (
            {"llmhost_service_overrides": {"coder": {"gateway_max_in_flight": 0}}},
            "llmhost_services['coder'].gateway_max_in_flight: Input should be greater than",
        ),
    ],
)
def test_settings_refuse(data: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=None) as caught:
        Settings.from_host_data(data, "gpu-01")
    assert message in str(caught.value)
    assert len(str(caught.value).splitlines()) == 1


def _problems(tmp: Path, clients: dict[str, str | None], **data: Any) -> list[str]:
    settings = Settings.from_host_data({"llmhost_gateway_clients": clients, **data}, "gpu-01")
    return gateway_checks.problems(settings)


def test_client_key_files(tmp_path: Path) -> None:
    good, short, two = tmp_path / "good", tmp_path / "short", tmp_path / "two"
    good.write_text(KEY + "\n")
    short.write_text("changeme\n")
    two.write_text(KEY + "\nsecond line\n")
    (tmp_path / "copy").write_text(KEY)
    assert _problems(tmp_path, {"alice": str(good), "bob": None}) == []
    found = _problems(
        tmp_path,
        {
            "a": str(tmp_path / "absent"),
            "b": str(short),
            "c": str(two),
            "d": str(good),
            "e": str(tmp_path / "copy"),
        },
    )
    assert [p.split(" ")[0] for p in found] == [
        "llmhost_gateway_clients['a']",
        "llmhost_gateway_clients['b']",
        "llmhost_gateway_clients['c']",
        "llmhost_gateway_clients:",
    ]
    assert "no such file on the controller" in found[0]
    assert "8 characters is a placeholder" in found[1]
    assert "more than one word" in found[2]
    assert "'d' and 'e' have the same key" in found[3]


def test_tls_files(tmp_path: Path) -> None:
    cert, key = _cert_pair(tmp_path)
    files = {"llmhost_tls_cert_file": str(cert), "llmhost_tls_key_file": str(key)}
    assert _problems(tmp_path, {"a": None}, **files) == []
    cert, key = _cert_pair(tmp_path, other_key=True)
    assert "is not the key of llmhost_tls_cert_file" in _problems(tmp_path, {}, **files)[0]
    cert, key = _cert_pair(tmp_path, days=-1)
    assert "expired on" in _problems(tmp_path, {}, **files)[0]
    cert.write_text("not a certificate")
    assert "not a PEM certificate" in _problems(tmp_path, {}, **files)[0]


def test_certificate_fact_parses_openssl() -> None:
    lines = [
        "notAfter=Jan  1 04:22:50 2027 GMT",
        "sha256 Fingerprint=8F:A2:D9",
        "X509v3 Subject Alternative Name: ",
        "    DNS:lab-gw, DNS:localhost, IP Address:127.0.0.1",
    ]
    assert parse_x509_text(lines) == {
        "not_after": "2027-01-01T04:22:50+00:00",
        "names": ["lab-gw", "localhost", "127.0.0.1"],
        "sha256": "8F:A2:D9",
    }
    assert parse_x509_text([]) is None


def test_key_hashes_fact_reads_hashes_only() -> None:
    digest = "a" * 64
    assert KeyHashes().process([f"alice {digest}", "junk", f"bob {'b' * 63}"]) == {"alice": digest}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _took(master: str, config: Path, want: bool) -> dict[str, Any]:
    # The master answers once it has handled the signal (it re-executes meanwhile): poll its
    # word until it says what the test waits for, not a clock.
    for _ in range(100):
        answer = agent.haproxy_took(master, str(config))
        if answer["ok"] is want and (want or "master CLI" not in answer["why"]):
            return answer
        time.sleep(0.1)
    return answer


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed: apt-get install haproxy")
def test_haproxy_took_tells_a_reload_that_could_not_bind(tmp_path: Path) -> None:
    # A real HAProxy in master-worker mode: a reload onto a port another program holds
    # "succeeds" for systemctl, but the master keeps the old worker; the agent says so.
    assert HAPROXY is not None
    old, held = _free_port(), _free_port()
    config, master = tmp_path / "haproxy.cfg", str(tmp_path / "master.sock")
    text = "defaults\n  mode http\n  timeout client 5s\n  timeout server 5s\n  timeout connect 5s\n"
    config.write_text(f"{text}frontend f\n  bind 127.0.0.1:{old}\n")
    proc = subprocess.Popen([HAPROXY, "-W", "-S", master, "-f", str(config)])
    try:
        assert _took(master, config, True) == {"ok": True, "why": ""}
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", held))
            squatter.listen()
            config.write_text(f"{text}frontend f\n  bind 127.0.0.1:{held}\n")
            proc.send_signal(signal.SIGUSR2)
            refused = _took(master, config, False)
            time.sleep(1)  # and it stays refused
            assert agent.haproxy_took(master, str(config))["ok"] is False
        assert "from before the last reload" in refused["why"], refused
        proc.send_signal(signal.SIGUSR2)
        assert _took(master, config, True)["ok"] is True
    finally:
        proc.terminate()
        proc.wait(10)
