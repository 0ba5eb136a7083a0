"""Converge a fresh lab guest, prove the second run changes nothing, then verify it; then
reboot it: both services come back on their own, one after the other, and the post-deploy
checks and ``llmhost status`` pass with a dead proxy in the host's environment."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable

from lab_guest import (
    BIN,
    GUEST,
    HOST,
    LAYOUT,
    ROOT,
    SERVICES,
    DeployRun,
    FreshConverge,
    host_checks,
    on_guest,
    unit,
)

from llmhost_lab import lab

DEAD_PROXY = "http://127.0.0.1:9"
PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
PROXY_SAVED = "/etc/environment.llmhost-drill"


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


# systemd's catalogue ids of "unit starting" and "unit started" (its start job done).
STARTING, STARTED = "7d4958e842da4a758f6c1cdc7b36dcc5", "39f53479d3a045ac8e11786248231fbf"


def _boot_journal() -> tuple[float, list[dict]]:
    """This boot's first entry (seconds) and the services' entries, with systemd's own."""
    first = json.loads(on_guest("journalctl -b -o json --no-pager | head -n 1"))
    units = " ".join(f"-u {unit(name)}" for name in SERVICES)
    lines = on_guest(f"journalctl -b -o json --no-pager {units}").splitlines()
    return int(first["__REALTIME_TIMESTAMP"]) / 1e6, [json.loads(line) for line in lines]


def _first(entries: list[dict], name: str, match: Callable[[dict], bool]) -> float:
    found = [
        int(e["__REALTIME_TIMESTAMP"]) / 1e6
        for e in entries
        if unit(name) in (e.get("UNIT"), e.get("_SYSTEMD_UNIT")) and match(e)
    ]
    assert found, f"{unit(name)}: no such entry in this boot's journal"
    return found[0]


def test_reboot_brings_both_back_one_after_the_other_without_a_deploy(
    converged: DeployRun,
) -> None:
    # Last in this module, on its converged guest: a clean power-off and boot, no deploy.
    started = time.monotonic()
    # A dead proxy in /etc/environment (pam_env gives it to every ssh command): the checks'
    # agent and status's requests go to the host's loopback, never through a proxy.
    on_guest(f"cp -p /etc/environment {PROXY_SAVED}")
    on_guest("cat >> /etc/environment", stdin="".join(f"{n}={DEAD_PROXY}\n" for n in PROXY_VARS))
    try:
        _reboot_drill(started)
    finally:
        on_guest(f"mv {PROXY_SAVED} /etc/environment")


def _reboot_drill(started: float) -> None:
    assert on_guest("echo $https_proxy").strip() == DEAD_PROXY
    lab.reboot(GUEST)
    # The boot is over once multi-user.target is reached: it waits for both start jobs, each
    # held by its unit's health wait.
    state = on_guest("timeout 600 systemctl is-system-running --wait", check=False).strip()
    settled = time.monotonic() - started
    assert state == "running", on_guest("systemctl --failed --no-legend", check=False)
    for name in SERVICES:
        health = LAYOUT.health_url(LAYOUT.settings.service(name))
        assert (
            on_guest(f"curl --noproxy '*' -s -o /dev/null -w '%{{http_code}}' {health}") == "200"
        ), name
    boot, entries = _boot_journal()
    first, second = SERVICES
    # systemd's own lines: "Started" once the unit's health wait saw /health 200 (vLLM's access
    # log line for it was missing from one fresh run's journal, after a power-off that hung).
    first_up = _first(entries, first, lambda e: e.get("MESSAGE_ID") == STARTED)
    second_start = _first(entries, second, lambda e: e.get("MESSAGE_ID") == STARTING)
    second_up = _first(entries, second, lambda e: e.get("MESSAGE_ID") == STARTED)
    assert first_up <= second_start, (first_up, second_start)
    restarts = on_guest(f"systemctl show -p NRestarts --value {unit(first)} {unit(second)}")
    assert restarts.split() == ["0", "0"], restarts
    gateway = f"https://127.0.0.1:{LAYOUT.settings.gateway_port}/health"
    assert (
        on_guest(
            f"for i in $(seq 30); do curl --noproxy '*' -ksf -o /dev/null {gateway} && break; "
            f"sleep 1; done; curl --noproxy '*' -ks -o /dev/null -w '%{{http_code}}' {gateway}"
        )
        == "200"
    )
    result = host_checks()
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    # Read through the same ssh and agent; an alert about the reboot's restarts may fire.
    status = subprocess.run(
        [BIN / "llmhost", "status", "inventories/lab.py", "--limit", HOST, "--json"],
        cwd=ROOT, text=True, capture_output=True,
    )  # fmt: skip
    read = json.loads(status.stdout)["hosts"][HOST]
    assert read["error"] is None, read["error"]
    assert sorted(s["name"] for s in read["services"]) == sorted(SERVICES), read
    assert all(s["active"].startswith("active") for s in read["services"]), read
    print(
        f"\ndrill reboot: {first} healthy {first_up - boot:.1f} s after boot, {second} "
        f"started {second_start - first_up:.1f} s after that; both healthy {second_up - boot:.1f}"
        f" s after boot (reboot call to boot settled: {settled:.1f} s); drill "
        f"{time.monotonic() - started:.0f} s with the post-deploy suite"
    )
