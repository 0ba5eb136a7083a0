"""Deploy timings on a fresh lab guest: time per phase, total, and the no-op re-run beside a
trivial one-operation pyinfra run on the same guest.

    python bench/deploy_bench.py [--keep]

Phases are timed from the moment pyinfra starts a phase's first operation to the start of the
next phase's (pyinfra prints each operation as it starts); the first row also holds
connecting and preparing (facts, preflight, planning).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmhost.phases import models, services, venv
from llmhost_lab import lab

ROOT = Path(__file__).resolve().parents[1]
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
GUEST = "bench"
STARTING = re.compile(r"--> Starting operation: llmhost \| ([^|]+?) \|")


def timed_deploy(*args: str) -> tuple[float, list[tuple[str, float]]]:
    """Run pyinfra, stamping each phase's first operation as its line streams by."""
    started = time.monotonic()
    marks: list[tuple[str, float]] = [("connect + prepare", started)]
    proc = subprocess.Popen(
        [PYINFRA, "-y", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout
    for line in proc.stdout:
        match = STARTING.search(line)
        if match and match.group(1) != marks[-1][0]:
            marks.append((match.group(1), time.monotonic()))
    if proc.wait() != 0:
        raise SystemExit(f"pyinfra {' '.join(args)} failed")
    ended = time.monotonic()
    edges = [t for _, t in marks[1:]] + [ended]
    return ended - started, [(name, edge - t) for (name, t), edge in zip(marks, edges, strict=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the guest up afterwards")
    args = parser.parse_args()
    lab.down(GUEST, quiet=True)
    t0 = time.monotonic()
    lab.up(GUEST)
    up_s = time.monotonic() - t0
    target = ["inventories/lab.py", "deploy.py", "--limit", f"lab-{GUEST}"]
    try:
        total, phases = timed_deploy(*target)
        noop, _ = timed_deploy(*target)
        with tempfile.NamedTemporaryFile("w", suffix=".py", dir=ROOT, delete=False) as trivial:
            trivial.write(
                "from pyinfra.operations import server\nserver.shell(commands=['true'])\n"
            )
        try:
            one_op, _ = timed_deploy("inventories/lab.py", trivial.name, "--limit", f"lab-{GUEST}")
        finally:
            Path(trivial.name).unlink()
    finally:
        if not args.keep:
            lab.down(GUEST, quiet=True)
    print(f"{'lab guest up (fresh)':<42}{up_s:7.1f} s")
    for name, seconds in phases:
        print(f"  {name:<40}{seconds:7.1f} s")
    print(f"{'first deploy, total':<42}{total:7.1f} s")
    part = dict(phases)
    install, fetch = part.get(venv.PHASE, 0.0), part.get(models.PHASE, 0.0)
    floor = max(install, fetch) + part.get(services.PHASE, 0.0)
    overhead = "overhead: total / (max(install, fetch) + starts)"
    print(f"{overhead:<50}{total / floor:5.2f}  (goal <= 1.15)")
    print(f"{'no-op re-run':<42}{noop:7.1f} s")
    print(f"{'one-operation pyinfra run':<42}{one_op:7.1f} s")
    print(f"{'no-op ratio':<50}{noop / one_op:5.2f}  (goal <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
