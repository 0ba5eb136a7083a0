"""What preflight found and planned, as every later phase sees it (``Checked``): a phase writes
its own files and directories only where preflight's one read of them (``Layout.owned_paths``)
did not find them as they should be."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pyinfra.api.operation import OperationMeta
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import FileContents

from llmhost.applied_plan import AppliedPlan
from llmhost.facts.batch import FactReader
from llmhost.facts.paths import PathState
from llmhost.operations import paths
from llmhost.operations.paths import DirEntry, FileEntry, directory_in_place, file_in_place
from llmhost.plan.catalogue import ModelMeta
from llmhost.plan.planner import HostPlan


@dataclass(frozen=True)
class Checked:
    """The phases' one view of the host: what preflight read and planned, and the checks
    that let a phase skip what it shows complete."""

    metas: dict[str, ModelMeta]
    plan: HostPlan
    # The plan as the host keeps it (written by the services phase, read by gateway and monitoring).
    applied: AppliedPlan
    # The service user and its group exist as the system phase makes them.
    account_ready: bool
    # What preflight read of the host, in one command while the deploy was prepared: the
    # phases skip work it shows complete (a marker holding what it should) instead of asking
    # again, one command each.
    facts: FactReader
    # The state of each of ``Layout.owned_paths``, as that one command read it.
    owned: dict[str, PathState | None]

    def files_in_place(self, entries: Iterable[FileEntry]) -> bool:
        """Each of these files was found with its content, owner and mode."""
        return all(
            e["dest"] in self.owned and file_in_place(self.owned[e["dest"]], e) for e in entries
        )

    def directories_in_place(self, entries: Iterable[DirEntry]) -> bool:
        """Each of these directories was found with its owner and mode."""
        return all(
            e["path"] in self.owned and directory_in_place(self.owned[e["path"]], e)
            for e in entries
        )

    def marked(self, path: str, content: str) -> bool:
        """The marker or stamp at ``path`` holds ``content``: what it marks is complete."""
        return self.facts.get(FileContents, path=path) == [content]

    def installed(self, packages: Iterable[str]) -> bool:
        """Every one of these OS packages is installed."""
        return set(packages) <= self.facts.get(DebPackages).keys()

    def files(self, name: str, entries: list[FileEntry]) -> list[OperationMeta]:
        """``paths.files`` unless every entry is in place (a no-op run asks nothing more); the
        operation, for ``restarted=`` and ``reloaded=`` lists (none when nothing is written)."""
        if self.files_in_place(entries):
            return []
        return [paths.files(name=name, entries=entries)]

    def directories(self, name: str, entries: list[DirEntry]) -> None:
        if not self.directories_in_place(entries):
            paths.directories(name=name, entries=entries)
