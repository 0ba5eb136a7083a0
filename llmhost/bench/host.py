"""``llmhost bench``'s side of the SSH connection: find the running release's python, run the
load driver there, relay its progress, and return its one JSON answer."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from collections import deque
from typing import Any

from llmhost.bench import driver
from llmhost.bench.cases import exec_python
from llmhost.observe.reach import Reach
from llmhost.remote import run as remote


class BenchFailed(RuntimeError):
    """The host could not be read or the driver failed there; the message says why."""


def release_python(where: Reach, unit: str) -> str:
    """The interpreter ``unit`` runs now (its release venv's), from its ``ExecStart``."""
    exec_start = read_host(where, ["systemctl", "show", "-p", "ExecStart", "--value", unit])
    python = exec_python(exec_start)
    if python is None:
        raise BenchFailed(f"{unit} has no ExecStart on the host: deploy first")
    return python


class Driver:
    """The load driver running on the host: its progress relayed to our stderr as it comes,
    its last other lines kept for the error when it fails, its answer read when it ends."""

    def __init__(self, where: Reach, python: str, spec: dict[str, Any]) -> None:
        command = where.ssh_argv(remote.argv(driver, json.dumps(spec), python=python))
        self._tail: deque[str] = deque(maxlen=8)
        self._loading = threading.Event()
        # The answer to a file: a pipe could fill while we read the progress on the other one.
        self._answer = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by answer/stop)
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=self._answer, stderr=subprocess.PIPE, text=True
        )
        self._relay = threading.Thread(target=self._read, daemon=True)
        self._relay.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.startswith(driver.PROGRESS):
                print(line.rstrip(), file=sys.stderr, flush=True)
                if driver.CASE in line:
                    self._loading.set()
            elif line.strip():
                self._tail.append(line.rstrip())

    def loading(self) -> None:
        """Return once the first case's load has begun (vLLM imported, prompts sampled)."""
        while not self._loading.wait(0.5):
            if self.proc.poll() is not None:
                self._failed()

    def answer(self) -> dict[str, Any]:
        """Its answer, once it ended; a held case (``until_stdin``) ends when we close stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        if self.proc.wait() != 0:
            self._failed()
        self._relay.join()
        self._answer.seek(0)
        found: dict[str, Any] = json.loads(self._answer.read())
        self._answer.close()
        return found

    def stop(self) -> None:
        """Without its SSH channel the driver fails at its next progress line: a case at most."""
        self.proc.terminate()
        self.proc.wait()
        self._answer.close()

    def _failed(self) -> None:
        self._relay.join(timeout=5)
        raise BenchFailed(
            f"the load driver failed on the host (exit status {self.proc.returncode}): "
            + " | ".join(self._tail)
        )


def drive(where: Reach, python: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run every case of ``spec`` on the host and return the driver's answer."""
    load = Driver(where, python, spec)
    try:
        return load.answer()
    except BaseException as e:
        # Also a sweep's Stopped (SIGTERM): its put-back deploy must not run under this load.
        load.stop()
        if isinstance(e, KeyboardInterrupt):
            raise BenchFailed("interrupted; the host finishes at most the case it was in") from None
        raise


def read_host(where: Reach, command: list[str]) -> str:
    """``command``'s output on the host; BenchFailed with its last error line otherwise."""
    result = subprocess.run(where.ssh_argv(command), capture_output=True, text=True)
    if result.returncode != 0:
        why = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
        raise BenchFailed(f"could not read the host ({command[0]}): {why[0]}")
    return result.stdout


def main_pids(where: Reach, units: list[str]) -> dict[str, str]:
    """Each unit's main process now (a restart changes it)."""
    out = read_host(where, ["systemctl", "show", "-p", "MainPID", "--value", *units])
    return dict(zip(units, out.split(), strict=True))
