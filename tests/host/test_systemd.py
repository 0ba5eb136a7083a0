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


def _open_files(limits: str) -> tuple[int, int]:
    """(soft, hard) "Max open files" in a /proc/PID/limits text."""
    for line in limits.splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    return 0, 0


def test_open_files_limit(service: ServiceTarget) -> None:
    # The running process's limit, not the unit's text: what vLLM itself sees. A host whose
    # init has a lower ceiling (a container) caps it there.
    read = service.target.output
    _, ceiling = _open_files(read("cat /proc/1/limits", where=service.where))
    want = min(NOFILE, ceiling)
    soft, _ = _open_files(read("cat /proc/%s/limits", str(service.main_pid()), where=service.where))
    if soft < want:
        fail_on(
            [
                f"{service.where}: {service.unit}'s process may open {soft} files, want at least "
                f"{want} (LimitNOFILE in the unit; redeploy)"
            ]
        )
