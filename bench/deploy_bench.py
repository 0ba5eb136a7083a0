"""Deploy timings on a fresh lab guest: time per phase, total, and the no-op re-run beside a
trivial one-operation pyinfra run on the same guest.

    python bench/deploy_bench.py [--keep]

Phases are timed from the moment pyinfra starts a phase's first operation to the start of the
next phase's (pyinfra prints each operation as it starts); the first row also holds
connecting and preparing (facts, preflight, planning). The venv install and hub downloads are
background jobs that run side by side with the model pushes: their own durations come from
the summary line each job writes when it completes.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmhost.phases import models, services
from llmhost_lab import lab

ROOT = Path(__file__).resolve().parents[1]
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
GUEST = "bench"
STARTING = re.compile(r"--> Starting operation: llmhost \| ([^|]+?) \|")
# A background job's summary, as the deploy shows it once the job is complete.
JOB_DONE = re.compile(r"\] (.+?): complete \(llmhost: (installed|downloaded) .* in (\d+) s\)")


def timed_deploy(*args: str) -> tuple[float, list[tuple[str, float]], dict[str, float]]:
    """Run pyinfra, stamping each phase's first operation as its line streams by; also each
    background job's own duration (install or download) by what it built."""
    started = time.monotonic()
    marks: list[tuple[str, float]] = [("connect + prepare", started)]
    jobs: dict[str, float] = {}
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
        if done := JOB_DONE.search(line):
            jobs[f"{done.group(2)}: {done.group(1)}"] = float(done.group(3))
    if proc.wait() != 0:
        raise SystemExit(f"pyinfra {' '.join(args)} failed")
    ended = time.monotonic()
    edges = [t for _, t in marks[1:]] + [ended]
    phases = [(name, edge - t) for (name, t), edge in zip(marks, edges, strict=True)]
    return ended - started, phases, jobs


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
        total, phases, jobs = timed_deploy(*target)
        noop, _, _ = timed_deploy(*target)
        with tempfile.NamedTemporaryFile("w", suffix=".py", dir=ROOT, delete=False) as trivial:
            trivial.write(
                "from pyinfra.operations import server\nserver.shell(commands=['true'])\n"
            )
        try:
            one_op = timed_deploy("inventories/lab.py", trivial.name, "--limit", f"lab-{GUEST}")[0]
        finally:
            Path(trivial.name).unlink()
    finally:
        if not args.keep:
            lab.down(GUEST, quiet=True)
    print(f"{'lab guest up (fresh)':<42}{up_s:7.1f} s")
    for name, seconds in phases:
        print(f"  {name:<40}{seconds:7.1f} s")
    for name, seconds in jobs.items():
        print(f"  {'(job) ' + name:<40}{seconds:7.1f} s")
    print(f"{'first deploy, total':<42}{total:7.1f} s")
    part = dict(phases)
    install = sum(s for name, s in jobs.items() if name.startswith("installed"))
    # Pushes run in the models phase; downloads are jobs of their own, side by side.
    fetch = part.get(models.PHASE, 0.0) + max(
        (s for name, s in jobs.items() if name.startswith("downloaded")), default=0.0
    )
    floor = max(install, fetch) + part.get(services.PHASE, 0.0)
    overhead = "overhead: total / (max(install, fetch) + starts)"
    print(f"{overhead:<50}{total / floor:5.2f}  (goal <= 1.15)")
    print(f"{'no-op re-run':<42}{noop:7.1f} s")
    print(f"{'one-operation pyinfra run':<42}{one_op:7.1f} s")
    print(f"{'no-op ratio':<50}{noop / one_op:5.2f}  (goal <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
