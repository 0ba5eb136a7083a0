"""The phases' own files and directories, written only where preflight's one read of them
(``Layout.owned_paths``) did not find them as they should be: a no-op run asks nothing more."""

from __future__ import annotations

from pyinfra.api.operation import OperationMeta

from llmhost.operations import paths
from llmhost.preflight import Preflight


def files(checked: Preflight, name: str, entries: list[paths.FileEntry]) -> list[OperationMeta]:
    """``paths.files`` unless every entry is in place; the operation, for ``restarted=`` and
    ``reloaded=`` lists (none when nothing is written)."""
    if checked.files_in_place(entries):
        return []
    return [paths.files(name=name, entries=entries)]


def directories(checked: Preflight, name: str, entries: list[paths.DirEntry]) -> None:
    if not checked.directories_in_place(entries):
        paths.directories(name=name, entries=entries)
