"""Converge a fresh lab guest, prove the second run changes nothing, then verify it."""

from __future__ import annotations

import json
import re
import subprocess

from conftest import (
    BIN,
    GUEST,
    LAYOUT,
    SERVICES,
    DeployRun,
    FreshConverge,
    host_checks,
    on_guest,
    unit,
)


def test_converge_changes_the_fresh_host(fresh_converge: FreshConverge) -> None:
    assert fresh_converge.first.changed > 0
    assert fresh_converge.first.errors == 0


def test_second_converge_changes_nothing_and_restarts_nothing(
    fresh_converge: FreshConverge,
) -> None:
    again = fresh_converge.second
    assert again.returncode == 0, again.output[-3000:]
    assert (again.changed, again.errors) == (0, 0), again.output[-3000:]
    assert fresh_converge.services_after == fresh_converge.services_before


def test_post_deploy_checks_pass(converged: DeployRun) -> None:
    result = host_checks()
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


def test_kv_prediction_matches_what_vllm_logs(converged: DeployRun) -> None:
    plan = json.loads(on_guest(f"cat {LAYOUT.plan}"))
    for name, planned in plan["services"].items():
        journal = on_guest(f"journalctl -u {unit(name)} --no-pager -o cat")
        sizes = re.findall(r"CPU KV cache size: ([\d,]+) tokens", journal)
        assert sizes, f"{name}: vLLM logged no KV cache size"
        assert int(sizes[-1].replace(",", "")) == planned["kv_tokens"], (name, sizes[-1], planned)


def test_lab_ssh_runs_a_command_as_the_readme_shows(converged: DeployRun) -> None:
    command = ["systemctl", "is-active", *map(unit, SERVICES)]
    result = subprocess.run(
        [BIN / "llmhost", "lab", "ssh", "--name", GUEST, "--", *command],
        text=True,
        capture_output=True,
    )
    assert (result.returncode, result.stdout.split()) == (0, ["active", "active"]), result.stderr
