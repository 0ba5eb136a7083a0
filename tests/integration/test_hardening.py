"""Hardening on the converged guest: each unit's systemd-analyze exposure within the goal, every
setting left off explained (bench/hardening_report.py), and every process of each service
running as the unprivileged user with no capabilities, no new privileges and a syscall filter.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from lab_guest import GUEST, LAYOUT, ROOT, SERVICES, DeployRun, on_guest, run_on_guest, unit

GOAL = "4.0"
USER = LAYOUT.settings.user


def test_exposure_within_goal_and_every_setting_left_off_explained(converged: DeployRun) -> None:
    report = subprocess.run(
        [sys.executable, "bench/hardening_report.py", "--name", GUEST, "--max-exposure", GOAL],
        cwd=ROOT,
        text=True,
        capture_output=True,
    )
    print(report.stdout)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-2000:]


@pytest.mark.parametrize("name", SERVICES)
def test_every_process_runs_unprivileged(converged: DeployRun, name: str) -> None:
    service_unit = unit(name)
    uid = on_guest(f"id -u {USER}").strip()
    pids = [
        line.split()[0]
        for line in on_guest("ps -eo pid=,unit=").splitlines()
        if line.split()[1:] == [service_unit]
    ]
    assert pids, f"{service_unit} has no processes"
    for pid in pids:
        fields = dict(
            line.split(":", 1)
            for line in on_guest(f"cat /proc/{pid}/status").splitlines()
            if ":" in line
        )
        status = {key: fields[key].split() for key in ("Uid", "CapEff", "NoNewPrivs", "Seccomp")}
        # Real, effective, saved and filesystem uid; Seccomp 2 is filter mode.
        assert status == {
            "Uid": [uid] * 4,
            "CapEff": ["0000000000000000"],
            "NoNewPrivs": ["1"],
            "Seccomp": ["2"],
        }, f"{service_unit} PID {pid}: {status}"


def test_a_unit_systemd_loads_without_a_line_is_put_back(converged: DeployRun) -> None:
    """What the deploy wrote is what systemd runs: a unit line systemd ignores (a key this
    systemd does not know, a typo) fails the restart and puts the last good unit back."""
    import shlex

    from llmhost.operations.services import ACTIVATE

    name = "llmhost-probe.service"
    path, good = f"/etc/systemd/system/{name}", "/tmp/llmhost-probe-good"
    unit_text = "[Service]\nExecStart=/bin/sleep infinity\nProtectSystem=strict\n"

    def activate() -> subprocess.CompletedProcess[str]:
        args = ["sh", "-c", ACTIVATE, "activate", name, "restart", "5", good, "true", path]
        return run_on_guest(shlex.join(args))

    on_guest(f"rm -rf {good}; cat > {path}", stdin=unit_text)
    try:
        assert activate().returncode == 0
        assert on_guest(f"cat {good}/{name}") == unit_text
        on_guest(f"cat > {path}", stdin=unit_text.replace("ProtectSystem=", "ProtectSistem="))
        run = activate()
        assert run.returncode == 1, run.stderr
        said = run.stderr.splitlines()[0]
        print(f"\ndrill unit line ignored: {said}")
        assert f"{name}: the restart did not take: systemd ignored lines of {name}" in said
        assert "Unknown key" in said and "'ProtectSistem'" in said
        assert "put back its last good config, which runs again" in said
        assert on_guest(f"cat {path}") == unit_text
        assert on_guest(f"systemctl is-active {name}").strip() == "active"
    finally:
        on_guest(f"systemctl stop {name}; rm -rf {path} {good}; systemctl daemon-reload", False)
