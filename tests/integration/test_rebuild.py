"""The guest's last change, then its rebuild after failure: destroy the guest, recreate it on
the same model store, deploy.

Runs last: it replaces the guest the other integration tests use. So the change to one service
that comes first needs no deploy back to the lab's data (a vLLM start saved): the rebuilt guest
is deployed from that data.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from drills import changed, uploads
from lab_guest import GUEST, LAYOUT, MODEL_STORE, DeployRun, deploy, host_checks, on_guest, unit

from llmhost.layout import MODEL_MARKER
from llmhost_lab import lab

SPECS = LAYOUT.settings.services


def _files(root: Path) -> dict[str, tuple[int, int, int]]:
    """Each file under ``root``: inode, size and modification time (any rewrite changes them)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            found[str(path.relative_to(root))] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return found


def test_changing_one_service_restarts_only_that_service(start_converged: DeployRun) -> None:
    def pids() -> dict[str, str]:
        return {
            name: on_guest(f"systemctl show -p MainPID --value {unit(name)}").strip()
            for name in ("coder", "general")
        }

    before = pids()
    override = json.dumps({"general": {"max_model_len": 512}})
    run = deploy("--data", f"llmhost_service_overrides={override}")
    assert run.returncode == 0, run.output[-3000:]
    after = pids()
    assert after["coder"] == before["coder"], "coder was restarted though only general changed"
    assert after["general"] != before["general"], "general was not restarted"
    assert "--max-model-len 512" in on_guest(
        f"cat {LAYOUT.unit_path(LAYOUT.settings.service('general'))}"
    )


def test_rebuilt_guest_converges_without_sending_the_models_again(converged: DeployRun) -> None:
    # Its own start state: the store complete, whatever a drill before it left half-done (a
    # converge only then: the rollout before it leaves other pins, which the rebuild replaces).
    if not all((MODEL_STORE / svc.model.dirname / MODEL_MARKER).is_file() for svc in SPECS):
        start = deploy()
        assert start.returncode == 0, start.output[-5000:]
    store = _files(MODEL_STORE)
    assert store, f"the model store {MODEL_STORE} is empty after the converge"

    started = time.monotonic()
    lab.down(GUEST)
    lab.up(GUEST, model_store=os.fspath(MODEL_STORE))
    up_s = time.monotonic() - started
    run = deploy("--debug")
    rebuild_s = time.monotonic() - started
    assert run.returncode == 0, run.output[-5000:]

    again = [op for op in changed(run.output) if op.startswith("Model for")]
    assert again == [], f"models transferred again: {again}"
    sent = uploads(run.output, LAYOUT.settings.model_dir)
    assert sent == {}, f"model files sent again: {sent}"
    assert _files(MODEL_STORE) == store, "the model store was rewritten"
    print(
        f"\ndrill rebuild: guest destroyed, recreated and converged in {rebuild_s:.0f} s "
        f"(guest up {up_s:.0f} s, deploy {rebuild_s - up_s:.0f} s); model bytes re-transferred: "
        f"{sum(sent.values())} (the wheelhouse, for comparison: "
        f"{sum(uploads(run.output, LAYOUT.wheelhouse or '').values())} bytes sent again)"
    )

    checks = host_checks()
    assert checks.returncode == 0, checks.stdout[-5000:] + checks.stderr[-2000:]
