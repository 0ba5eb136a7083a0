"""The state of a background job: a transient systemd unit that builds something on the host
(a venv install, a model download) and writes a marker last when it is complete."""

from __future__ import annotations

from typing import TypedDict

from pyinfra.api import FactBase, QuoteString, StringCommand
from typing_extensions import override

# systemd's ActiveState values of a unit whose process may still be writing.
RUNNING_STATES = frozenset({"activating", "active", "deactivating", "reloading"})


class JobState(TypedDict):
    # The unit's process is running (a unit that finished is unloaded or inactive).
    running: bool
    # systemd's Result of the last run ("success", "exit-code", "signal", ...).
    result: str
    # The run's id in the journal (``_SYSTEMD_INVOCATION_ID``), "" once the unit is unloaded.
    invocation: str
    # The marker's first line, None while it is absent.
    done: str | None
    # Bytes under ``watch`` so far (``du -sb``) while the unit is active, else 0: a no-op run
    # does not walk a finished venv.
    bytes: int


class Job(FactBase[JobState]):
    """
    A transient unit's state, its completion marker and the bytes it has written so far.

    .. code:: python

        {"running": True, "result": "success", "invocation": "6f0c0d9b2a5e4c3f9d1e8a7b6c5d4e3f",
         "done": None, "bytes": 1288490188}
    """

    @override
    def command(self, unit: str, done: str, watch: str) -> StringCommand:
        return StringCommand(
            "systemctl",
            "show",
            "-p",
            "ActiveState",
            "-p",
            "Result",
            "-p",
            "InvocationID",
            QuoteString(unit),
            ";",
            "echo",
            "done=$(head -n 1",
            QuoteString(done),
            "2>/dev/null)",
            ";",
            "!",
            "systemctl",
            "is-active",
            "-q",
            QuoteString(unit),
            "||",
            "echo",
            "bytes=$(du -sb",
            QuoteString(watch),
            "2>/dev/null | cut -f 1)",
        )

    @override
    def process(self, output: list[str]) -> JobState:
        values = dict(line.partition("=")[::2] for line in output)
        return JobState(
            running=values.get("ActiveState", "") in RUNNING_STATES,
            result=values.get("Result", ""),
            invocation=values.get("InvocationID", ""),
            done=values.get("done") or None,
            bytes=int(values["bytes"]) if values.get("bytes", "").isdigit() else 0,
        )
