"""Run a module of ours on a host that does not have llmhost: its source goes as ``python -c``.

Such a module (``llmhost.remote.pipindex``, ``llmhost.remote.agent``) imports only the standard
library and answers on stdout; ``-B`` keeps it from writing bytecode caches on the host.
"""

from __future__ import annotations

import shlex
from functools import cache
from pathlib import Path
from types import ModuleType


@cache
def source(module: ModuleType) -> str:
    assert module.__file__ is not None
    return Path(module.__file__).read_text(encoding="utf-8")


def argv(module: ModuleType, *args: str, python: str = "python3") -> list[str]:
    """The command line that runs ``module`` with ``args`` on the host."""
    return [python, "-B", "-c", source(module), *args]


def check(module: ModuleType, mode: str, args: str, python: str = "python3") -> str:
    """A shell command that succeeds when ``module``'s ``mode`` answers ``{"ok": true, ...}``;
    the answer also goes to stderr, for the caller to quote."""
    answer = shlex.join(argv(module, mode, args, python=python))
    return f"{answer} | tee /dev/stderr | grep -q '\"ok\": true'"
