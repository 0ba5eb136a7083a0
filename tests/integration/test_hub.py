"""The hub path for real (issue 29): coder's model downloaded on the guest by the deploy's hub
job, from the lab's hub mirror (Olah serving local git repositories, ``llmhost_lab.mirror``).

One converge from the mirror starts the module; the drills after it change coder's model only
(general keeps the lab's local one), and the refused revision and the corrupted file change
nothing at all, so the module costs four coder starts (the mirror converge, the gated repo,
the resumed download, and the lab's data put back at the end). Each drill prints its key
number; the module prints its own wall time.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from drills import LiveDeploy, op_result
from lab_guest import (
    GUEST,
    LAYOUT,
    DeployRun,
    deploy,
    link_rate,
    on_guest,
    refusals,
    scan_for,
    unit,
    watched_deploy,
)

from llmhost.layout import fetch_job
from llmhost.operations.models import HUB_PATTERNS
from llmhost.remote.snapshot import HF_METADATA
from llmhost.settings import ModelSpec
from llmhost_lab import lab, mirror

TINY = "tiny-coder"
REPO = f"{mirror.ORG}/{TINY}"
WEIGHTS = "model.safetensors"
MIB = 1024**2
# The killed download's repo: ≈ 47 MiB of weights, at this rate ≈ 25 s over the guest's veth.
WIDE = f"{mirror.ORG}/{mirror.WIDE}"
WIDE_RATE = "16mbit"


@dataclass(frozen=True)
class Snapshot:
    """Coder's model from the mirror: its --data and where the deploy puts it."""

    model: dict[str, object]
    data: tuple[str, ...]
    dest: str
    marker: str
    unit: str


def _snapshot(repo: str, revision: str, token_file: Path | None = None) -> Snapshot:
    model = {"source": "hub", "repo": repo, "revision": revision, "path": None}
    data = ["--data", f"llmhost_hf_endpoint={json.dumps(mirror.ENDPOINT)}"]
    if token_file:
        model["gated"] = True
        data += ["--data", f"llmhost_hf_token_file={json.dumps(str(token_file))}"]
    data += ["--data", f"llmhost_service_overrides={json.dumps({'coder': {'model': model}})}"]
    dest = f"{LAYOUT.settings.model_dir}/{ModelSpec.model_validate(model).dirname}"
    return Snapshot(model, tuple(data), dest, f"{dest}/.llmhost-complete", fetch_job(dest))


def _served_since(mark: int) -> list[dict]:
    """What the mirror's front sent since the byte log was ``mark`` bytes long."""
    with mirror.served_log().open() as log:
        log.seek(mark)
        return [json.loads(line) for line in log]


def _log_mark() -> int:
    return mirror.served_log().stat().st_size if mirror.served_log().exists() else 0


def _weights_sent(served: list[dict], repo: str) -> list[dict]:
    return [s for s in served if s["method"] == "GET" and s["path"].endswith(f"/{WEIGHTS}")
            and f"/{repo}/resolve/" in s["path"]]  # fmt: skip


def _coder_pid() -> str:
    return on_guest(f"systemctl show -p MainPID --value {unit('coder')}").strip()


def _published(repo: str) -> str:
    return mirror.publish(repo, lab.model_path(TINY))


@pytest.fixture(scope="module")
def hub(converged: DeployRun) -> Iterator[None]:
    """The mirror up for this guest; afterwards the lab's data again, the mirror released."""
    began = time.monotonic()
    lab.mirror_up(GUEST)
    yield
    try:
        restored = deploy()
        assert restored.returncode == 0, restored.output[-3000:]
    finally:
        lab.mirror_release(GUEST)
        mirror.ungate(f"{REPO}-gated")
        for extra in ("next", "gated", "corrupted"):
            mirror.unpublish(f"{REPO}-{extra}")
        print(f"\ntest_hub.py: the module took {time.monotonic() - began:.0f} s (wall)")


@pytest.fixture(scope="module")
def from_mirror(hub: None) -> Snapshot:
    """Coder's model from the mirror, deployed: the start of every later drill."""
    snap = _snapshot(REPO, mirror.revision(REPO))
    mark = _log_mark()
    run = deploy(*snap.data)
    assert run.returncode == 0, run.output[-5000:]
    sent = _weights_sent(_served_since(mark), REPO)
    assert len(sent) == 1 and sent[0]["status"] == 200, sent
    size, seconds = sent[0]["bytes"], sent[0]["s"]
    summary = on_guest(f"journalctl -u {snap.unit} -o cat --no-pager | grep '^llmhost: ' | tail -2")
    print(f"\ndrill hub deploy: the mirror sent {WEIGHTS} ({size / MIB:.1f} MiB) in {seconds} s "
          f"({size / MIB / max(seconds, 0.001):.0f} MiB/s) over the guest's veth (no limit); "
          f"the job said: {' / '.join(summary.splitlines())}")  # fmt: skip
    return snap


def _host_digests(dest: str) -> dict[str, str]:
    out = on_guest(f"cd {dest} && find . -maxdepth 1 -type f ! -name '.*' -exec sha256sum {{}} +")
    return {line.split()[1].removeprefix("./"): line.split()[0] for line in out.splitlines()}


def _commit_digests(repo: str, revision: str) -> dict[str, str]:
    """sha256 of each file of the commit the download takes (an LFS file's from its pointer)."""
    root = mirror.repo_dir(repo)
    git = ["git", "-C", str(root)]
    names = subprocess.run([*git, "ls-tree", "-r", "--name-only", revision], check=True,
                           capture_output=True, text=True).stdout.split()  # fmt: skip
    found = {}
    for name in names:
        if not any(fnmatch.fnmatch(name, p) for p in HUB_PATTERNS):
            continue
        blob = subprocess.run([*git, "show", f"{revision}:{name}"], check=True,
                              capture_output=True).stdout  # fmt: skip
        pointer = blob.decode(errors="replace")
        lfs = pointer.startswith("version https://git-lfs") and "oid sha256:" in pointer
        found[name] = pointer.split("oid sha256:")[1].split()[0] if lfs else _sha256(blob)
    return found


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_deploy_from_the_mirror_serves_the_commit(from_mirror: Snapshot) -> None:
    revision = str(from_mirror.model["revision"])
    assert on_guest(f"cat {from_mirror.marker}").strip() == revision
    host, commit = _host_digests(from_mirror.dest), _commit_digests(REPO, revision)
    same = sum(host.get(name) == digest for name, digest in commit.items())
    print(f"drill hub deploy: {REPO}@{revision[:12]}: {len(host)} files on the host, {same} of "
          f"the commit's {len(commit)} equal to it (sha256)")  # fmt: skip
    assert host == commit
    exec_start = on_guest(f"systemctl show -p ExecStart --value {unit('coder')}")
    assert from_mirror.dest in exec_start, exec_start


def test_a_revision_the_mirror_lacks_is_refused_before_any_change(from_mirror: Snapshot) -> None:
    missing = secrets.token_hex(20)
    mark = _log_mark()
    watched = watched_deploy(*_snapshot(REPO, missing).data)
    run, written, pids = watched.run, watched.written, watched.pids_before
    assert watched.pids_after == pids, f"a service was restarted: {pids.split()} -> " + (
        f"{watched.pids_after.split()}"
    )
    assert run.returncode != 0, run.output[-3000:]
    problems = refusals(run.output)
    print("drill missing revision:", *problems, sep="\n  ")
    assert len(problems) == 1 and f"{REPO}@{missing}: the hub refused" in problems[0], problems
    assert written == "", f"the refused deploy wrote on the host:\n{written}"
    # Preflight asked the mirror from the controller; the guest asked nothing.
    guests = {s["client"] for s in _served_since(mark)}
    assert guests <= {mirror.ADDRESS, "127.0.0.1"}, guests


def test_a_file_corrupted_on_the_mirror_is_never_marked_complete(from_mirror: Snapshot) -> None:
    repo = f"{REPO}-corrupted"
    snap = _snapshot(repo, _published(repo))
    # Bit rot in the mirror's store after publishing: same size, other bytes.
    store = mirror.lfs_file(repo, WEIGHTS)
    with store.open("r+b") as f:
        f.seek(store.stat().st_size // 2)
        f.write(b"\xde\xad\xbe\xef" * 16)
    pid = _coder_pid()
    run = deploy(*snap.data)
    assert run.returncode != 0, run.output[-3000:]
    refused = [line.strip() for line in run.output.splitlines() if f"{WEIGHTS}: sha256" in line]
    print("drill corrupted file:", *refused, sep="\n  ")
    assert refused, run.output[-3000:]
    left = on_guest(f"ls -A {snap.dest}").split()
    assert ".llmhost-complete" not in left and WEIGHTS not in left, left
    assert _coder_pid() == pid, "coder restarted onto a snapshot that is not complete"
    assert snap.dest not in on_guest(f"systemctl show -p ExecStart --value {unit('coder')}")
    print(f"drill corrupted file: left in {snap.dest}: {left}; coder still on {from_mirror.dest}")


def test_a_gated_repo_downloads_with_the_token_from_its_file_not_kept_after(
    from_mirror: Snapshot, tmp_path: Path
) -> None:
    repo = f"{REPO}-gated"
    revision = _published(repo)
    token = f"hf_{secrets.token_hex(17)}"
    token_file = tmp_path / "hf_token"
    token_file.write_text(token + "\n")
    mirror.gate(repo, token)
    snap = _snapshot(repo, revision, token_file)
    # The gate is real: without the token the mirror refuses the guest.
    url = f"{mirror.ENDPOINT}/{repo}/resolve/{revision}/config.json"
    status = on_guest(f"curl -s -o /dev/null -w '%{{http_code}}' {url}").strip()
    run = deploy("-vv", *snap.data)
    assert run.returncode == 0, run.output[-5000:]
    assert on_guest(f"cat {snap.marker}").strip() == revision
    found = scan_for({"the HF token": token})
    where = {path: (f["secrets"], oct(f["mode"]), f["owner"]) for path, f in found["files"].items()}
    print(f"drill gated repo: without the token the mirror answered {status}; with it the "
          f"download completed; after the deploy the token is in: {where or 'no file'}; on "
          f"command lines: {found['cmdlines'] or 'none'}; in the journal: "
          f"{found['journal'] or 'no'}; in the -vv output: {token in run.output}")  # fmt: skip
    assert status == "401"
    # The download read it from its 0600 file (the gate let it through); once no download
    # needs it, the deploy removed the file: the token is not kept at rest on the host.
    for op in ("HF token (0600)", "Remove the HF token"):
        assert op_result(run.output, op).success == 1, run.output[-3000:]
    assert where == {}, where
    assert not found["cmdlines"] and not found["journal"] and token not in run.output
    mirror.ungate(repo)


def _partial_bytes(dest: str) -> int:
    """The largest partial download hf left in ``dest`` (0: none)."""
    sizes = on_guest(f"find {dest}/{HF_METADATA} -name '*.incomplete' -printf "
                     "'%s\\n' 2>/dev/null || true").split()  # fmt: skip
    return max(map(int, sizes), default=0)


def test_a_download_killed_half_way_resumes_with_only_the_rest(from_mirror: Snapshot) -> None:
    revision = mirror.revision(WIDE)
    snap = _snapshot(WIDE, revision)
    total = mirror.lfs_file(WIDE, WEIGHTS).stat().st_size
    partial = f"{snap.dest}/{HF_METADATA}"
    mark = _log_mark()
    with link_rate(WIDE_RATE):
        live = LiveDeploy(*snap.data)
        # hf writes a download in 10 MiB pieces: past a third, the kill leaves bytes on disk.
        third = f"find {partial} -name '*.incomplete' -size +{total // 3 // 1024}k | grep -q ."
        live.wait_on_guest(third, "a third of the weights on the guest", 300)
        on_guest(f"systemctl kill -s KILL {snap.unit}")
        live.proc.kill()
        live.wait(60)
    assert on_guest(f"test -e {snap.marker} || echo absent").strip() == "absent"
    kept = _partial_bytes(snap.dest)
    cut = _weights_sent(_served_since(mark), WIDE)
    assert kept > total // 3, kept

    mark = _log_mark()
    run = deploy(*snap.data)
    assert run.returncode == 0, run.output[-5000:]
    sent = _weights_sent(_served_since(mark), WIDE)
    said = on_guest(f"journalctl -u {snap.unit} -o cat --no-pager | grep 'resumed' | tail -1")
    print(f"\ndrill killed download: {WEIGHTS} is {total} bytes; the killed job had been sent "
          f"{sum(s['bytes'] for s in cut)} and kept {kept} ({kept / MIB:.0f} MiB); the re-run "
          f"fetched {sum(s['bytes'] for s in sent)} ({[(s['status'], s['from']) for s in sent]}); "
          f"the job said: {said.strip()}")  # fmt: skip
    # hf download by itself would GET all of it again (huggingface_hub 2.4.0 never reads the
    # partial file of a killed process); the job's resume step asks from its last byte.
    assert [(s["status"], s["from"], s["bytes"]) for s in sent] == [(206, kept, total - kept)]
    assert on_guest(f"cat {snap.marker}").strip() == revision
    assert _host_digests(snap.dest) == _commit_digests(WIDE, revision)
    assert _partial_bytes(snap.dest) == 0, "a partial download was left behind"
