"""Several facts read in one command: each fact's own command and processing, one round trip.

pyinfra 3 runs one command per ``host.get_fact`` and keeps nothing; preflight reads a dozen
facts on every run. ``FactReader`` reads the ones it is told of up front, in one ``Batch``, and
answers the same calls from that; anything else goes to the host as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pyinfra.api import FactBase, StringCommand
from typing_extensions import override

T = TypeVar("T")
# One line before each fact's output; one after it, with its exit status.
BEGIN = "@@llmhost-fact@@"
END = "@@llmhost-fact-status@@"

FactCall = tuple[type[FactBase[Any]], dict[str, Any]]


def _command(attr: Any, kwargs: dict[str, Any]) -> Any:
    return attr(**kwargs) if callable(attr) else attr


class Batch(FactBase[list[Any]]):
    """
    The facts given, in order, each as ``host.get_fact`` would give it during prepare: its
    default where its command fails, prints nothing or needs a program the host lacks.

    .. code:: python

        [{"name": "Debian", "major": 12, ...}, (3, 11)]
    """

    @override
    @staticmethod
    def default() -> list[Any]:
        return []

    @override
    def command(self, facts: Sequence[FactCall]) -> StringCommand:
        # Processed by the instances that made the commands: some facts keep what their
        # command printed for a missing file (FileContents' flag), as pyinfra's own get_fact
        # relies on.
        self._facts = [cls() for cls, _ in facts]
        parts: list[Any] = []
        for fact, (_, kwargs) in zip(self._facts, facts, strict=True):
            command = _command(fact.command, kwargs)
            needs = _command(fact.requires_command, kwargs)
            if needs:
                command = StringCommand(
                    "if command -v", needs, ">/dev/null 2>&1; then", command, "; else false; fi"
                )
            parts += [f"echo {BEGIN};", "(", command, f") </dev/null 2>/dev/null; echo {END} $?;"]
        return StringCommand(*parts)

    @override
    def process(self, output: list[str]) -> list[Any]:
        values: list[Any] = []
        lines: list[str] = []
        for line in output:
            if line == BEGIN:
                lines = []
            elif line.startswith(f"{END} ") and len(values) < len(self._facts):
                fact = self._facts[len(values)]
                ok = line[len(END) + 1 :] == "0" and lines
                values.append(fact.process(lines) if ok else fact.default())
            else:
                lines.append(line)
        return values


class FactReader:
    """``get`` as ``host.get_fact``; the calls named up front are read in one ``Batch``."""

    def __init__(self, host: Any, wanted: Sequence[FactCall]) -> None:
        self._host = host
        values = host.get_fact(Batch, facts=list(wanted)) if wanted else []
        # A batch cut short (a lost connection) answers nothing: each call goes to the host.
        complete = len(values) == len(wanted)
        self._read = {
            _key(cls, kwargs): value
            for (cls, kwargs), value in zip(wanted, values if complete else [], strict=False)
        }

    def get(self, cls: type[FactBase[T]], **kwargs: Any) -> T:
        key = _key(cls, kwargs)
        if key in self._read:
            return self._read[key]
        return self._host.get_fact(cls, **kwargs)


def _key(cls: type, kwargs: dict[str, Any]) -> tuple[type, str]:
    return cls, repr(sorted(kwargs.items()))
