"""Several facts read in one command: each fact's own command and processing, one round trip.

pyinfra 3 runs one command per ``host.get_fact`` and keeps nothing; preflight reads a dozen
facts on every run. ``FactReader`` reads the ones it is told of up front, in one ``Batch``, and
answers the same calls from that; anything else goes to the host as usual.

The operations' own reads join that batch from the next run on: ``fact`` remembers, on the
controller, each call an operation made while the run had not changed the host yet, and
preflight's reader reads those too (``remembered``). An operation gets the up-front value only
under the same condition, once per call (a second call, a poll, asks the host): a re-run that
changes nothing costs one round trip, and whatever follows a change is read fresh.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from pyinfra import host
from pyinfra.api import FactBase, StringCommand
from typing_extensions import override

from llmhost.cache import CACHE_DIR

T = TypeVar("T")
# One line before each fact's output; one after it, with its exit status.
BEGIN = "@@llmhost-fact@@"
END = "@@llmhost-fact-status@@"

FactCall = tuple[type[FactBase[Any]], dict[str, Any]]
# The calls the operations made of each host while it was unchanged (a JSON list per host).
READS_DIR = CACHE_DIR / "reads"
# Enough for every operation's reads; the oldest go first.
MAX_REMEMBERED = 64


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
        # All at once, each into a file of its own (most wait on systemd or the disk), then
        # printed in order.
        parts: list[Any] = ["d=$(mktemp -d) || exit 1;"]
        for i, (fact, (_, kwargs)) in enumerate(zip(self._facts, facts, strict=True)):
            command = _command(fact.command, kwargs)
            needs = _command(fact.requires_command, kwargs)
            if needs:
                command = StringCommand(
                    "if command -v", needs, ">/dev/null 2>&1; then", command, "; else false; fi"
                )
            parts += [
                "{ (",
                command,
                f') </dev/null >"$d/{i}" 2>/dev/null; echo $? >"$d/{i}.rc"; }} &',
            ]
        parts.append("wait;")
        for i in range(len(facts)):
            parts.append(f'echo {BEGIN}; cat "$d/{i}"; echo {END} "$(cat "$d/{i}.rc")";')
        parts.append('rm -rf "$d"')
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
        self._given: set[tuple[type, str]] = set()

    def get(self, cls: type[FactBase[T]], **kwargs: Any) -> T:
        key = _key(cls, kwargs)
        if key in self._read:
            return self._read[key]
        return self._host.get_fact(cls, **kwargs)

    def first(self, cls: type[FactBase[T]], **kwargs: Any) -> T:
        """As ``get``, but the up-front value only once per call and only while no operation
        of this run has changed the host; else what the host says now."""
        key = _key(cls, kwargs)
        if key in self._read and key not in self._given and not _changed(self._host):
            self._given.add(key)
            return self._read[key]
        return self._host.get_fact(cls, **kwargs)


_READERS: dict[str, FactReader] = {}
# What the reads file of each host holds, read once per run.
_KNOWN: dict[str, list[FactCall]] = {}


def reader_for_run(host: Any, wanted: Sequence[FactCall]) -> FactReader:
    """The run's reader of ``host``: ``wanted`` and what its operations read last time, in one
    command; ``fact`` answers from it."""
    known = remembered(host.name)
    reader = FactReader(host, [*wanted, *(c for c in known if c not in wanted)])
    _READERS[host.name] = reader
    _KNOWN[host.name] = known
    return reader


def fact(cls: type[FactBase[T]], **kwargs: Any) -> T:
    """``host.get_fact`` for an operation, before it yields anything: answered from the run's
    up-front read while the host is unchanged, and remembered for the next run's."""
    reader = _READERS.get(host.name)
    if reader is None:  # no preflight this run (an operation used on its own)
        return host.get_fact(cls, **kwargs)
    if not _changed(host):
        _remember(host.name, (cls, kwargs))
    return reader.first(cls, **kwargs)


def _changed(host: Any) -> bool:
    """An operation of this run has changed the host: one that ran (the deploy's code runs
    before any, each operation's body when its turn comes) and did something."""
    metas = (op.operation_meta for op in host.state.ops.get(host, {}).values())
    return any(meta.is_complete() and meta.did_change() for meta in metas)


def _reads_file(name: str) -> Path:
    return READS_DIR / f"{quote(name, safe='')}.json"


def remembered(name: str) -> list[FactCall]:
    """The calls the operations made of host ``name`` on earlier runs (none if unreadable)."""
    try:
        entries = json.loads(_reads_file(name).read_text())
    except (OSError, ValueError):
        return []
    calls: list[FactCall] = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            module, _, qualname = entry["fact"].partition(":")
            cls = getattr(importlib.import_module(module), qualname)
        except (KeyError, TypeError, AttributeError, ImportError, ValueError):
            continue  # a fact renamed or removed since: read live when it is used
        if isinstance(cls, type) and issubclass(cls, FactBase) and isinstance(entry, dict):
            calls.append((cls, dict(entry.get("kwargs") or {})))
    return calls


def _remember(name: str, call: FactCall) -> None:
    known = _KNOWN.setdefault(name, [])
    if call in known:
        return
    known.append(call)
    entries = [
        {"fact": f"{c.__module__}:{c.__qualname__}", "kwargs": k}
        for c, k in known[-MAX_REMEMBERED:]
    ]
    try:
        path = _reads_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp")
        tmp.write_text(json.dumps(entries))
        tmp.replace(path)
    except (OSError, TypeError, ValueError):
        pass  # not remembered: the next run reads it on its own, as now


def _key(cls: type, kwargs: dict[str, Any]) -> tuple[type, str]:
    return cls, repr(sorted(kwargs.items()))
