"""What the failure drills share: a deploy running in the background, pyinfra's results table
and the bytes a deploy uploaded."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conftest import GUEST, ROOT, deploy_command

from llmhost_lab import lab

# A row of pyinfra's results table: operation, hosts, success, error, no change ("-" is 0).
_ROW = re.compile(r"^\s+(llmhost \| .*?)\s{2,}(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$", re.M)
# With --debug, pyinfra logs every SFTP upload with its local source.
_UPLOAD = re.compile(r"Attempting upload of (.+) to (\S+)$", re.M)


@dataclass(frozen=True)
class OpResult:
    success: int
    error: int
    no_change: int


def results(output: str) -> dict[str, OpResult]:
    """pyinfra's results table: each operation's own name (without its deploys') to its row."""
    table = {}
    for row in _ROW.finditer(output):
        success, error, no_change = (0 if v == "-" else int(v) for v in row.groups()[2:])
        table[row[1].rsplit(" | ", 1)[-1]] = OpResult(success, error, no_change)
    return table


def op_result(output: str, name: str) -> OpResult:
    """The results-table row of the one operation whose name starts with ``name``."""
    rows = [row for op, row in results(output).items() if op.startswith(name)]
    assert len(rows) == 1, f"{len(rows)} result rows for {name!r} in:\n{output[-4000:]}"
    return rows[0]


def changed(output: str) -> list[str]:
    """The operations that changed the host."""
    return [op for op, row in results(output).items() if row.success]


def uploads(output: str, under: str) -> dict[str, int]:
    """The files a ``--debug`` deploy uploaded into the host directory ``under``: their sizes."""
    prefix = under.rstrip("/") + "/"
    return {
        dest: Path(src).stat().st_size
        for src, dest in _UPLOAD.findall(output)
        if dest.startswith(prefix)
    }


class LiveDeploy:
    """The README's deploy, running in the background, its output read as it comes."""

    def __init__(self, *extra: str) -> None:
        self.proc = subprocess.Popen(
            deploy_command(*extra),
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_until(self, done: Callable[[], bool], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if self.proc.poll() is not None:
                raise AssertionError(f"the deploy ended before {what}:\n{self.output[-3000:]}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"no {what} after {timeout_s:.0f} s:\n{self.output[-3000:]}")
            time.sleep(0.1)

    def wait_on_guest(self, condition: str, what: str, timeout_s: int) -> None:
        """Wait for a guest shell condition, polled on the guest so that the signal is not late."""
        guest = lab.find(GUEST)
        assert guest is not None
        poll = f"until {condition}; do sleep 0.2; done"
        waiter = subprocess.Popen(
            lab.ssh_command(guest, f"timeout {timeout_s} sh -c {shlex.quote(poll)}")
        )
        try:
            self.wait_until(lambda: waiter.poll() is not None, what, timeout_s + 30)
        finally:
            waiter.kill()
        assert waiter.returncode == 0, f"no {what} after {timeout_s} s"

    def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        # pyinfra may finish the running operation after Ctrl-C, or stop at once.
        returncode = self.proc.wait(timeout=900)
        self._reader.join(timeout=10)
        return returncode
