"""Secrets on the converged guest: the API key (generated, then one given in a controller file)
and the HF token appear in no unit file, no process command line, no journal line and no pyinfra
output, and every file that holds one is readable by its owner only.

The lab serves local models, so the deploy never writes the HF token to the host (the models
phase writes it only for hub models); the test gives it one anyway and checks it goes nowhere.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lab_guest import LAYOUT, DeployRun, deploy, on_guest, scan_for

from llmhost.layout import GATEWAY_USER

API_KEY_FILE = LAYOUT.api_key_env


@dataclass(frozen=True)
class Secrets:
    generated_key: str
    key: str
    token: str
    run: DeployRun
    # The gateway: a client key generated on the host, one from a controller file (only its
    # hash may reach the host), the TLS private key from a controller file.
    gateway_generated: str
    gateway_given: str
    tls_key: str

    def named(self) -> dict[str, str]:
        return {
            "the generated API key": self.generated_key,
            "the API key from llmhost_api_key_file": self.key,
            "the HF token from llmhost_hf_token_file": self.token,
            "the generated gateway client key": self.gateway_generated,
            "the gateway client key from a controller file": self.gateway_given,
            # The key's base64 body: the PEM's header lines are not secret.
            "the TLS private key": "".join(self.tls_key.splitlines()[1:-1])[:64],
        }


def _key_in(env_file_text: str) -> str:
    return env_file_text.strip().removeprefix("VLLM_API_KEY=")


@pytest.fixture(scope="module")
def given(converged: DeployRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secrets]:
    """The generated key, then a deploy at full verbosity with a key and a token from files."""
    generated = _key_in(on_guest(f"cat {API_KEY_FILE}"))
    root = tmp_path_factory.mktemp("secrets")
    key, token = secrets.token_urlsafe(32), f"hf_{secrets.token_hex(17)}"
    (root / "api_key").write_text(key + "\n")
    (root / "hf_token").write_text(token + "\n")
    gateway_generated = on_guest(f"cat {LAYOUT.gateway_key('lab')}").strip()
    gateway_given = secrets.token_urlsafe(32)
    (root / "ci.key").write_text(gateway_given + "\n")
    clients = {**LAYOUT.settings.gateway_clients, "ci": str(root / "ci.key")}
    tls_key = _tls_pair(root)
    run = deploy(
        "-vvv",
        "--data", f"llmhost_api_key_file={json.dumps(str(root / 'api_key'))}",
        "--data", f"llmhost_hf_token_file={json.dumps(str(root / 'hf_token'))}",
        "--data", f"llmhost_gateway_clients={json.dumps(clients)}",
        "--data", f"llmhost_tls_cert_file={json.dumps(str(root / 'tls.crt'))}",
        "--data", f"llmhost_tls_key_file={json.dumps(str(root / 'tls.key'))}",
    )  # fmt: skip
    assert run.returncode == 0, run.output[-3000:]
    yield Secrets(generated, key, token, run, gateway_generated, gateway_given, tls_key)
    # The data as committed again, for whatever module this worker runs next.
    restored = deploy()
    assert restored.returncode == 0, restored.output[-3000:]


def _tls_pair(root: Path) -> str:
    """A certificate and its key in controller files; the key's PEM text."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "30", "-subj", "/CN=lab", "-keyout", str(root / "tls.key"),
         "-out", str(root / "tls.crt")],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return (root / "tls.key").read_text()


@pytest.fixture(scope="module")
def scan(given: Secrets) -> dict:
    """Where on the guest each secret shows up (names only: no secret is printed)."""
    return scan_for(given.named())


def test_generated_key_not_in_converge_output(converged: DeployRun, given: Secrets) -> None:
    leaked = given.generated_key in converged.output
    assert not leaked, "the generated API key is in the converge's pyinfra output"


def test_not_in_verbose_pyinfra_output(given: Secrets) -> None:
    # -vvv prints every command pyinfra runs and its output.
    leaked = [name for name, value in given.named().items() if value in given.run.output]
    assert not leaked, f"in the -vvv pyinfra output: {leaked}"


def test_the_scan_finds_the_key_where_it_belongs(given: Secrets, scan: dict) -> None:
    # Proves the scan sees secrets: the key file must be found, holding the given key.
    hits = scan["files"].get(API_KEY_FILE, {}).get("secrets", [])
    assert hits == ["the API key from llmhost_api_key_file"], scan["files"]
    assert _key_in(on_guest(f"cat {API_KEY_FILE}")) == given.key


def test_not_in_unit_files(scan: dict) -> None:
    units = {p: f for p, f in scan["files"].items() if "/systemd/" in p}
    assert not units, f"secrets in unit files: {units}"


def test_not_on_any_command_line(scan: dict) -> None:
    assert not scan["cmdlines"], f"secrets in /proc/PID/cmdline: {scan['cmdlines']}"


def test_not_in_the_journal(scan: dict) -> None:
    assert not scan["journal"], f"in journalctl -o cat (all units): {scan['journal']}"


def test_only_in_files_private_to_their_owner(scan: dict) -> None:
    readable = {
        path: f"mode {found['mode']:04o} owner {found['owner']}: {found['secrets']}"
        for path, found in scan["files"].items()
        if found["mode"] & 0o077 or found["owner"] not in ("root", "vllm", GATEWAY_USER)
    }
    assert not readable, f"secrets in files other users can read: {readable}"
    where = {path: found["secrets"] for path, found in scan["files"].items()}
    print(json.dumps(where, indent=2))
    # The HF token stays on the controller in the lab (no hub model), the old key is gone; a
    # given client key never reaches the host (only its hash); the TLS key is in the gateway's
    # 0600 PEM only.
    assert where == {
        API_KEY_FILE: ["the API key from llmhost_api_key_file"],
        LAYOUT.gateway_key("lab"): ["the generated gateway client key"],
        LAYOUT.gateway_pem: ["the TLS private key"],
    }, where
