"""Rebuild after failure: destroy the guest, recreate it on the same model store, deploy.

Runs last: it replaces the guest the other integration tests use.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from conftest import GUEST, LAYOUT, MODEL_STORE, DeployRun, deploy, host_checks
from drills import changed, uploads

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
