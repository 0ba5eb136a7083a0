"""Host facts the preflight needs beyond pyinfra's own: free disk and the Python version."""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase, QuoteString, StringCommand
from typing_extensions import override


class FreeDiskBytes(FactBase[int | None]):
    """
    Bytes available to unprivileged writers on the filesystem that holds ``path``, or of its
    nearest existing parent when ``path`` does not exist yet (a fresh host).

    .. code:: python

        53687091200
    """

    @override
    def command(self, path: str) -> StringCommand:
        return StringCommand(
            f"p={shlex.quote(path)};",
            'while [ ! -e "$p" ]; do p=$(dirname "$p"); done;',
            'df --output=avail -B1 "$p" | tail -n 1',
        )

    @override
    def process(self, output: list[str]) -> int | None:
        value = "".join(output).strip()
        return int(value) if value.isdigit() else None


class PythonVersion(FactBase[tuple[int, int] | None]):
    """
    The ``major, minor`` version of an interpreter, or ``None`` when it is missing.

    .. code:: python

        (3, 11)
    """

    @override
    def command(self, python: str) -> StringCommand:
        return StringCommand(
            QuoteString(python),
            "-c",
            QuoteString("import sys; print('%d.%d' % sys.version_info[:2])"),
            "2>/dev/null || true",
        )

    @override
    def process(self, output: list[str]) -> tuple[int, int] | None:
        text = "".join(output).strip()
        major, _, minor = text.partition(".")
        return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None


class UnitRestarts(FactBase[int]):
    """
    How often systemd restarted a unit by its ``Restart=`` since the counter was last reset
    (``systemctl reset-failed``); 0 for a unit that does not exist.

    .. code:: python

        1
    """

    @override
    def command(self, unit: str) -> StringCommand:
        return StringCommand("systemctl show -p NRestarts --value", QuoteString(unit))

    @override
    def process(self, output: list[str]) -> int:
        value = "".join(output).strip()
        return int(value) if value.isdigit() else 0
