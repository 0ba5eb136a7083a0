"""Each service's unit: running, enabled, never restarted, no memory errors in its journal."""

from __future__ import annotations

from targets import ServiceTarget, fail_on

from llmhost.observe.checks import journal_problems


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
