"""Background jobs: long installs and downloads run as transient systemd units, so they go on
when the controller is lost, run side by side, and log to the journal; the deploy waits for
their completion marker before anything uses what they build."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, QuoteString, StringCommand, operation
from pyinfra.api.host import Host
from pyinfra.api.state import State

from llmhost.facts.batch import fact
from llmhost.facts.jobs import Job

# How often the wait looks at the job, and how often it says how far the job has got.
POLL_S = 2.0
REPORT_S = 15.0
# Lines of a failed job's journal shown with the failure.
JOURNAL_LINES = 30
# Read by every job, as by a login shell: a host's proxy settings live there.
HOST_ENVIRONMENT = "/etc/environment"
# How a job's script starts the lines it writes itself (the summary the wait shows).
SAYS = "llmhost: "


def start(
    unit: str, description: str, argv: list[str], environment: Mapping[str, str] | None = None
) -> Iterator[StringCommand]:
    """The commands that start ``argv`` as the transient unit ``unit``, as root.

    A job that failed stays loaded (as ``failed``) until this clears it, so its Result and
    journal can be read meanwhile; one that succeeded is unloaded by systemd.
    """
    yield StringCommand("systemctl", "reset-failed", QuoteString(unit), "2>/dev/null", "||", "true")
    setenv = [QuoteString(f"--setenv={k}={v}") for k, v in (environment or {}).items()]
    yield StringCommand(
        "systemd-run",
        "--quiet",
        QuoteString(f"--unit={unit}"),
        QuoteString(f"--description={description}"),
        "--property=Type=exec",
        QuoteString(f"--property=EnvironmentFile=-{HOST_ENVIRONMENT}"),
        *setenv,
        "--",
        *(QuoteString(a) for a in argv),
    )


@operation()
def finished(
    unit: str,
    done: str,
    content: str,
    watch: str,
    description: str,
    expected_bytes: int | None = None,
    timeout_s: int = 6 * 3600,
):
    """
    Wait until a background job has written its completion marker; fail if it stops first.

    + unit: the job's transient unit
    + done: the marker the job writes last
    + content: what the marker holds once the job built what this run wants
    + watch: the directory the job writes into (its size is the progress shown)
    + description: what the job builds, for the deploy's output
    + expected_bytes: how big ``watch`` will be, when known (shown beside the progress)
    + timeout_s: how long to wait; the job itself goes on after a timeout

    While waiting, the deploy's output shows every ``REPORT_S`` seconds how many bytes the job
    has written and its last journal line. A job that stopped without its marker fails the
    operation with its journal's tail; the next run starts it again.

    **Example:**

    .. code:: python

        jobs.finished(
            unit="llmhost-install-3f2a9c0d1e4b5a69.service",
            done="/opt/llmhost/venvs/3f2a9c0d1e4b5a69/.llmhost-installed",
            content="3f2a9c0d1e4b5a69...", watch="/opt/llmhost/venvs/3f2a9c0d1e4b5a69",
            description="vllm==0.33.0",
        )
    """
    if fact(Job, unit=unit, done=done, watch=watch)["done"] == content:
        host.noop(f"{description} already complete")
        return
    yield FunctionCommand(
        _wait, (unit, done, content, watch, description, expected_bytes, timeout_s), {}
    )


def _wait(
    state: State,
    host: Host,
    unit: str,
    done: str,
    content: str,
    watch: str,
    description: str,
    expected_bytes: int | None,
    timeout_s: int,
) -> bool:
    started = time.monotonic()
    reported = started
    while True:
        job = host.get_fact(Job, unit=unit, done=done, watch=watch)
        now = time.monotonic()
        if job["done"] == content:
            summary = _journal(host, unit, "", 1, ours=True)
            host.log(f"{description}: complete" + (f" ({summary[0]})" if summary else ""))
            return True
        if not job["running"]:
            _error(host, f"{description}: {unit} stopped before it was complete (result: "
                         f"{job['result'] or 'unknown'}); re-run the deploy to start it again. "
                         "Its journal:")  # fmt: skip
            for line in _journal(host, unit, job["invocation"], JOURNAL_LINES):
                _error(host, f"  {line}")
            return False
        if now - started > timeout_s:
            _error(
                host,
                f"{description}: {unit} still running after {timeout_s} s; it goes on "
                f"(`journalctl -fu {unit}`); re-run the deploy to wait for it again",
            )
            return False
        if now - reported >= REPORT_S:
            reported = now
            done_bytes = _size(job["bytes"])
            of = f" of ~{_size(expected_bytes)}" if expected_bytes else ""
            last = _journal(host, unit, job["invocation"], 1)
            host.log(f"{description}: {done_bytes}{of} after {now - started:.0f} s"
                     + (f" ({last[0][:160]})" if last else ""))  # fmt: skip
        time.sleep(POLL_S)


def _journal(host: Host, unit: str, invocation: str, lines: int, ours: bool = False) -> list[str]:
    """The job's last journal lines: its run's own while systemd knows it, else the unit's;
    ``ours``: only the lines its script wrote (``llmhost: ...``)."""
    match = f"_SYSTEMD_INVOCATION_ID={invocation}" if invocation else f"--unit={unit}"
    command = ["journalctl", "--no-pager", "-o", "cat", QuoteString(match)]
    if ours:
        command += ["|", "grep", QuoteString(f"^{SAYS}"), "|", "tail", "-n", str(lines)]
    else:
        command += ["-n", str(lines)]
    ok, output = host.run_shell_command(StringCommand(*command))
    return [line.line.strip() for line in output if line.line.strip()] if ok else []


def _error(host: Host, message: str) -> None:
    host.log_styled(message, fg="red", log_func=logger.error)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
