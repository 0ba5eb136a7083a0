"""Many hosts in one pyinfra run: three fresh lab guests deployed at once vs one alone.

    python bench/fleet_bench.py [--keep]

Both runs start from fresh guests. The times compared leave out the services phase (each
guest's two vLLM starts are CPU-bound, and the lab's guests share the controller's cores);
everything else (connect, facts, preflight, system, venv install, model push) is in. The third
guest carries a per-host override (``llmhost_service_overrides``), which its applied plan must
show. Needs ~15 GiB of free memory (six tiny vLLM instances).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmhost.applied_plan import AppliedPlan
from llmhost.layout import Layout
from llmhost.service import phase as services
from llmhost.settings import group_settings
from llmhost_lab import lab

ROOT = Path(__file__).resolve().parents[1]
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
GUESTS = ("fleet-1", "fleet-2", "fleet-3")
OVERRIDE = {"general": {"max_model_len": 512}}
SERVICES_PHASE = re.compile(rf"\[(lab-[\w-]+)\] {re.escape(services.PHASE)}: ([\d.]+) s")


def inventory(names: tuple[str, ...]) -> str:
    """An inventory of these guests in the group `lab`; the last one has the override."""
    hosts = []
    for i, name in enumerate(names):
        guest = lab.find(name)
        assert guest is not None
        data = {
            "ssh_hostname": guest.address,
            "ssh_user": guest.ssh_user,
            "ssh_port": guest.ssh_port,
            "ssh_key": guest.ssh_key,
            "ssh_strict_host_key_checking": "no",
            "ssh_known_hosts_file": "/dev/null",
        }
        if i == len(names) - 1 and len(names) > 1:
            data["llmhost_service_overrides"] = OVERRIDE
        hosts.append((f"lab-{name}", data))
    return f"lab = {hosts!r}\n"


def timed_run(names: tuple[str, ...]) -> tuple[float, float]:
    """One pyinfra run over fresh guests: wall time, and the longest services phase."""
    for name in names:
        lab.down(name, quiet=True)
        lab.up(name)
    # Beside deploy.py, where pyinfra finds group_data/; its name is in .gitignore.
    with tempfile.NamedTemporaryFile(
        "w", prefix=".fleet-inventory-", suffix=".py", dir=ROOT, delete=False
    ) as inv:
        inv.write(inventory(names))
    try:
        started = time.monotonic()
        result = subprocess.run(
            [PYINFRA, "-y", inv.name, "deploy.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        wall = time.monotonic() - started
    finally:
        Path(inv.name).unlink()
    if result.returncode != 0:
        raise SystemExit(f"deploy of {names} failed:\n{result.stdout[-3000:]}{result.stderr}")
    # pyinfra's logger writes the phase times to stderr.
    phases = {host: float(s) for host, s in SERVICES_PHASE.findall(result.stdout + result.stderr)}
    assert set(phases) == {f"lab-{n}" for n in names}, phases
    return wall, max(phases.values())


def applied_max_model_len(name: str) -> int:
    guest = lab.find(name)
    assert guest is not None
    path = Layout(group_settings(ROOT, "lab")).plan
    out = subprocess.run(
        lab.ssh_command(guest, "cat", path), capture_output=True, text=True, check=True
    ).stdout
    return AppliedPlan.from_json(out, f"lab-{name}: {path}").services["general"].max_model_len


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the guests up afterwards")
    args = parser.parse_args()
    try:
        one_wall, one_start = timed_run(GUESTS[:1])
        three_wall, three_start = timed_run(GUESTS)
        lens = {name: applied_max_model_len(name) for name in GUESTS}
    finally:
        if not args.keep:
            for name in GUESTS:
                lab.down(name, quiet=True)
    one, three = one_wall - one_start, three_wall - three_start
    for label, wall, start in (
        ("one host", one_wall, one_start),
        ("three hosts", three_wall, three_start),
    ):
        print(f"{label + ', whole deploy':<46}{wall:7.1f} s  (services phase {start:.1f} s)")
    print(f"{'one host, without the vLLM starts':<46}{one:7.1f} s")
    print(f"{'three hosts, without the vLLM starts':<46}{three:7.1f} s")
    print(f"{'ratio (goal <= 1.3)':<46}{three / one:7.2f}")
    print(f"general's max_model_len per host (override {json.dumps(OVERRIDE)} on {GUESTS[-1]}):")
    for name, value in lens.items():
        print(f"  lab-{name}: {value}")
    assert lens[GUESTS[-1]] == 512 and all(v != 512 for v in list(lens.values())[:-1]), lens
    return 0


if __name__ == "__main__":
    sys.exit(main())
