"""The batch fact run for real on this machine: each fact in it comes out as that fact's own
command and processing give it alone (its default where the command fails or is missing)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pyinfra.api import FactBase
from pyinfra.facts.files import FileContents, FindDirectories
from pyinfra.facts.server import LinuxDistribution

from llmhost.facts import batch
from llmhost.facts.batch import Batch, FactCall, FactReader
from llmhost.facts.host import Listeners, PythonVersion


def _sh(command: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", command.get_raw_value() if hasattr(command, "get_raw_value") else command],
        capture_output=True,
        text=True,
    )


def _alone(cls: type[FactBase[Any]], kwargs: dict[str, Any]) -> Any:
    """The fact as pyinfra's get_fact gives it: processed output if it succeeded, else default."""
    fact = cls()
    command = fact.command(**kwargs) if callable(fact.command) else fact.command
    result = _sh(command)
    lines = result.stdout.splitlines()
    return fact.process(lines) if result.returncode == 0 and lines else fact.default()


class NeedsAMissingProgram(FactBase[str]):
    def requires_command(self) -> str:
        return "llmhost-no-such-program"

    def command(self) -> str:
        return "echo should-not-run"


def test_each_fact_comes_out_as_it_does_alone(tmp_path: Path) -> None:
    (tmp_path / "marker").write_text("abc123\nsecond line\n")
    (tmp_path / "pkg-1.0.dist-info").mkdir()
    calls: list[FactCall] = [
        # First: an answer without a final newline once ran into the next fact's marker.
        (Listeners, {"python": "python3"}),
        (LinuxDistribution, {}),
        (PythonVersion, {"python": "python3"}),
        (FileContents, {"path": str(tmp_path / "marker")}),
        (FileContents, {"path": str(tmp_path / "missing")}),
        (FindDirectories, {"path": str(tmp_path), "maxdepth": 1, "fname": "*.dist-info"}),
    ]
    batch = Batch()
    result = _sh(batch.command(facts=calls))
    assert result.returncode == 0
    got = batch.process(result.stdout.splitlines())
    # The host's sockets may change between the two reads: only the shape of the first.
    assert isinstance(got[0], list) and all("port" in s for s in got[0])
    assert got[1:] == [_alone(cls, kwargs) for cls, kwargs in calls[1:]]
    assert got[3] == ["abc123", "second line"] and got[4] is None


def test_a_missing_program_gives_the_default() -> None:
    batch = Batch()
    result = _sh(batch.command(facts=[(NeedsAMissingProgram, {})]))
    assert batch.process(result.stdout.splitlines()) == [None]


class _Host:
    def __init__(self) -> None:
        self.reads: list[type] = []

    def get_fact(self, cls: type[FactBase[Any]], **kwargs: Any) -> Any:
        self.reads.append(cls)
        if cls is Batch:
            return [f"batched {c.__name__} {k}" for c, k in kwargs["facts"]]
        return f"alone {cls.__name__} {kwargs}"


def test_the_reader_answers_what_was_read_up_front_and_asks_for_the_rest() -> None:
    fake = _Host()
    reader = FactReader(fake, [(FileContents, {"path": "/a"})])
    assert reader.get(FileContents, path="/a") == "batched FileContents {'path': '/a'}"
    assert reader.get(FileContents, path="/b") == "alone FileContents {'path': '/b'}"
    assert fake.reads == [Batch, FileContents]


class FakeHost:
    """A host that answers facts from a table and counts what it was asked."""

    name = "gpu-01"

    def __init__(self, facts: dict[type, Any]) -> None:
        self.facts = facts
        self.asked: list[str] = []
        self.state = SimpleNamespace(ops={})

    def get_fact(self, cls: type, **kwargs: Any) -> Any:
        self.asked.append(cls.__name__)
        if cls is Batch:
            return [self.facts[c] for c, _ in kwargs["facts"]]
        return self.facts[cls]

    def changed(self) -> None:
        """An operation of this run changed the host."""
        meta = SimpleNamespace(is_complete=lambda: True, did_change=lambda: True)
        self.state.ops = {self: {"op": SimpleNamespace(operation_meta=meta)}}


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    fake = FakeHost({LinuxDistribution: {"name": "Debian"}, FileContents: ["abc"]})
    monkeypatch.setattr(batch, "READS_DIR", tmp_path / "reads")
    monkeypatch.setattr(batch, "_READERS", {})
    monkeypatch.setattr(batch, "_KNOWN", {})
    monkeypatch.setattr(batch, "host", fake)
    return fake


def test_what_operations_read_joins_the_next_runs_one_read(fake: FakeHost) -> None:
    marker = {"path": "/srv/llmhost/models/coder/.llmhost-complete"}
    batch.reader_for_run(fake, [(LinuxDistribution, {})])
    assert batch.fact(FileContents, **marker) == ["abc"]
    assert fake.asked == ["Batch", "FileContents"]

    # The next run reads it up front, with preflight's own facts.
    fake.asked.clear()
    batch.reader_for_run(fake, [(LinuxDistribution, {})])
    assert batch.fact(FileContents, **marker) == ["abc"]
    assert fake.asked == ["Batch"]
    # A second call is a poll: it asks the host.
    batch.fact(FileContents, **marker)
    assert fake.asked == ["Batch", "FileContents"]


def test_after_a_change_operations_read_the_host_again(fake: FakeHost) -> None:
    marker = {"path": "/opt/llmhost/venvs/x/.llmhost-installed"}
    batch.reader_for_run(fake, [])
    batch.fact(FileContents, **marker)
    fake.asked.clear()
    batch.reader_for_run(fake, [])
    fake.changed()
    batch.fact(FileContents, **marker)
    assert fake.asked == ["Batch", "FileContents"]


def test_an_unreadable_memory_costs_only_reads(fake: FakeHost) -> None:
    batch.READS_DIR.mkdir(parents=True)
    (batch.READS_DIR / "gpu-01.json").write_text('[{"fact": "no.such:Fact"}, 3, "x"]')
    assert batch.remembered("gpu-01") == []
    batch.reader_for_run(fake, [])
    assert batch.fact(FileContents, path="/x") == ["abc"]
    assert fake.asked == ["FileContents"]
