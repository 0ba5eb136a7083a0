"""Each service's unit: running, enabled, never restarted, no memory errors in its journal."""

from __future__ import annotations

from targets import ServiceTarget, fail_on

from llmhost.observe.checks import journal_problems
from llmhost.service.units import NOFILE


def test_active_enabled(service: ServiceTarget) -> None:
    props = service.show()
    if props["ActiveState"] != "active" or props["UnitFileState"] != "enabled":
        fail_on(
            [
                f"{service.where}: {service.unit} is {props['ActiveState']}/{props['SubState']}, "
                f"unit file {props['UnitFileState'] or 'not installed'} (want active, enabled); "
                f"see `journalctl -u {service.unit}`"
            ]
        )


def test_no_restarts(service: ServiceTarget) -> None:
    restarts = service.show()["NRestarts"]
    if restarts != "0":
        fail_on(
            [
                f"{service.where}: systemd restarted {service.unit} {restarts} time(s) on its "
                "own since the last deploy (which acknowledges restarts); the reason is in "
                f"`journalctl -u {service.unit}`"
            ]
        )


def test_journal_clean(service: ServiceTarget) -> None:
    problems = journal_problems(service.journal())
    if problems:
        fail_on(
            [
                f"{service.where}: {len(problems)} memory error line(s) in the journal of its "
                "current run; first ones:",
                *problems[:5],
            ]
        )


def test_open_files_limit(service: ServiceTarget) -> None:
    # The running process's limit, not the unit's text: what vLLM itself sees.
    limits = service.target.output(
        "cat /proc/%s/limits", str(service.main_pid()), where=service.where
    )
    soft = next(
        (line.split()[3] for line in limits.splitlines() if line.startswith("Max open files")),
        "0",
    )
    if not soft.isdigit() or int(soft) < NOFILE:
        fail_on(
            [
                f"{service.where}: {service.unit}'s process may open {soft} files, want at least "
                f"{NOFILE} (LimitNOFILE in the unit; redeploy)"
            ]
        )
