"""What the failure drills share: pyinfra's results table and the bytes a deploy uploaded."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# The lab's directories on the guest (group_data defaults); the model store is bound at
# MODEL_DIR by `llmhost lab up --model-store`.
MODEL_DIR = "/srv/llmhost/models"
VENV = "/opt/llmhost/venv"
WHEELHOUSE = "/opt/llmhost/wheelhouse"

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
