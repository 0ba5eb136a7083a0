"""``llmhost bench``'s side of the SSH connection: find the running release's python, run the
load driver there, relay its progress, and return its one JSON answer."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
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
    command = ["systemctl", "show", "-p", "ExecStart", "--value", unit]
    result = subprocess.run(where.ssh_argv(command), capture_output=True, text=True)
    if result.returncode != 0:
        why = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
        raise BenchFailed(f"could not read the host: {why[0]}")
    python = exec_python(result.stdout)
    if python is None:
        raise BenchFailed(f"{unit} has no ExecStart on the host: deploy first")
    return python


def drive(where: Reach, python: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run every case of ``spec`` on the host; its progress lines go to our stderr as they come,
    its last other lines into the error when it fails."""
    command = where.ssh_argv(remote.argv(driver, json.dumps(spec), python=python))
    tail: deque[str] = deque(maxlen=8)
    # The answer to a file: a pipe could fill while we read the progress on the other one.
    with tempfile.TemporaryFile(mode="w+") as answer:
        proc = subprocess.Popen(command, stdout=answer, stderr=subprocess.PIPE, text=True)
        try:
            _relay(proc, tail)
        except KeyboardInterrupt:
            # Without its SSH channel the driver fails at its next progress line: a case at most.
            proc.terminate()
            raise BenchFailed("interrupted; the host finishes at most the case it was in") from None
        if proc.wait() != 0:
            raise BenchFailed(
                f"the load driver failed on the host (exit status {proc.returncode}): "
                + " | ".join(tail)
            )
        answer.seek(0)
        return json.loads(answer.read())


def _relay(proc: subprocess.Popen[str], tail: deque[str]) -> None:
    """The driver's progress lines to our stderr as they come; its other lines kept in ``tail``."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith(driver.PROGRESS):
            print(line.rstrip(), file=sys.stderr, flush=True)
        elif line.strip():
            tail.append(line.rstrip())
