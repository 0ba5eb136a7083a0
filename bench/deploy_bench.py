"""Deploy timings on a fresh lab guest: time per phase, total, and the no-op re-run beside a
trivial one-operation pyinfra run on the same guest (medians of several, taken in turns).

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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmhost.install import models, venv
from llmhost.service import phase as services
from llmhost_lab import lab

ROOT = Path(__file__).resolve().parents[1]
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
GUEST = "bench"
# No-op and one-operation runs each, in turns: the median of each is compared.
ROUNDS = 7
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
        # The first re-run also learns what the operations read (their facts join preflight's
        # one read from the next run on); then no-op and one-operation runs, taken in turns.
        first_rerun, _, _ = timed_deploy(*target)
        with tempfile.NamedTemporaryFile("w", suffix=".py", dir=ROOT, delete=False) as trivial:
            trivial.write(
                "from pyinfra.operations import server\nserver.shell(commands=['true'])\n"
            )
        trivial_target = ("inventories/lab.py", trivial.name, "--limit", f"lab-{GUEST}")
        noops, one_ops = [], []
        try:
            for _ in range(ROUNDS):
                noops.append(timed_deploy(*target)[0])
                one_ops.append(timed_deploy(*trivial_target)[0])
        finally:
            Path(trivial.name).unlink()
        noop, one_op = statistics.median(noops), statistics.median(one_ops)
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
    # The install is its wheels' push (the Python env phase, with a wheelhouse: what pip
    # downloads without one) and then the job.
    install = part.get(venv.PHASE, 0.0) + sum(
        s for name, s in jobs.items() if name.startswith("installed")
    )
    # Pushes run in the models phase; downloads are jobs of their own, side by side.
    fetch = part.get(models.PHASE, 0.0) + max(
        (s for name, s in jobs.items() if name.startswith("downloaded")), default=0.0
    )
    floor = max(install, fetch) + part.get(services.PHASE, 0.0)
    overhead = "overhead: total / (max(install, fetch) + starts)"
    print(f"{overhead:<50}{total / floor:5.2f}  (goal <= 1.15)")
    print(f"{'first re-run (learns the reads)':<42}{first_rerun:7.1f} s")
    print(f"{f'no-op re-run (median of {ROUNDS})':<42}{noop:7.2f} s")
    print(f"{f'one-operation pyinfra run (median of {ROUNDS})':<42}{one_op:7.2f} s")
    print(f"{'no-op ratio':<50}{noop / one_op:5.2f}  (goal <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
