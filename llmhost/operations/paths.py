"""Files and directories the deploy owns, several checked in one command (``PathStates``)
where pyinfra's files.put and files.directory cost two or three round trips each."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from io import BytesIO
from typing import TypedDict

from pyinfra import host
from pyinfra.api import FileUploadCommand, OperationError, QuoteString, StringCommand, operation

from llmhost.facts.batch import fact
from llmhost.facts.paths import PathState, PathStates

# Where a changed file is staged beside its place before it is moved over it.
STAGED = ".llmhost-new"


class FileEntry(TypedDict, total=False):
    dest: str  # required
    content: str  # this, or src
    src: str  # a controller file to copy, instead of content
    user: str  # default root
    group: str  # default root
    mode: str  # default 644


class DirEntry(TypedDict, total=False):
    path: str  # required
    user: str
    group: str
    mode: str  # default 755


# Modes of what an entry does not give one for.
FILE_MODE = "644"
DIR_MODE = "755"


def _owned(state: PathState, entry: FileEntry | DirEntry, default_mode: str) -> bool:
    return (state["user"], state["group"], int(state["mode"], 8)) == (
        entry.get("user", "root"),
        entry.get("group", "root"),
        int(entry.get("mode", default_mode), 8),
    )


def _sha1(entry: FileEntry) -> str:
    if "src" in entry:
        with open(entry["src"], "rb") as f:
            return hashlib.file_digest(f, "sha1").hexdigest()
    return hashlib.sha1(entry["content"].encode()).hexdigest()


def _same_content(state: PathState | None, entry: FileEntry) -> bool:
    return state is not None and state["sha1"] == _sha1(entry)


def file_in_place(state: PathState | None, entry: FileEntry) -> bool:
    """The file is there with this content, owner and mode."""
    return state is not None and _same_content(state, entry) and _owned(state, entry, FILE_MODE)


def directory_in_place(state: PathState | None, entry: DirEntry) -> bool:
    """The directory is there with this owner and mode."""
    return state is not None and state["type"] == "directory" and _owned(state, entry, DIR_MODE)


def _chown_chmod(path: str, entry: FileEntry | DirEntry, default_mode: str) -> list[object]:
    owner = f"{entry.get('user', 'root')}:{entry.get('group', 'root')}"
    q = QuoteString(path)
    return ["chown", QuoteString(owner), q, "&&", "chmod", entry.get("mode", default_mode), q]


def _joined(parts: list[list[object]]) -> Iterator[StringCommand]:
    """The parts as one command, each run only if the ones before succeeded."""
    args: list[object] = []
    for part in parts:
        args += (["&&"] if args else []) + part
    if args:
        yield StringCommand(*args)


@operation()
def files(entries: list[FileEntry]):
    """
    Files with the given content, owner and mode; all of them read in one command.

    + entries: ``{"dest", "content", "user", "group", "mode"}`` each (root, root, 644 by default);
      ``"src"``, a controller file, instead of ``"content"`` copies that file

    A file whose content differs is written beside its place (``<dest>.llmhost-new``, made 0600
    before anything is written into it), given its owner and mode, then moved over it: a reader
    never sees half a file, and a secret is never readable by others on the way. One that
    differs only in owner or mode is given them. Parent directories must exist.

    **Example:**

    .. code:: python

        paths.files(entries=[
            {"dest": "/etc/llmhost/coder.env", "content": env, "user": "vllm",
             "group": "vllm", "mode": "600"},
        ])
    """
    states = fact(PathStates, paths=[e["dest"] for e in entries])
    staged: list[tuple[FileEntry, str]] = []
    fixed: list[list[object]] = []
    for entry, state in zip(entries, states, strict=True):
        if state is not None and state["type"] not in ("file", "link"):
            raise OperationError(f"{entry['dest']} exists and is not a file ({state['type']})")
        if file_in_place(state, entry):
            continue
        if _same_content(state, entry):
            fixed.append(_chown_chmod(entry["dest"], entry, FILE_MODE))
        else:
            staged.append((entry, entry["dest"] + STAGED))
    if not staged and not fixed:
        host.noop(f"{len(entries)} file(s) already in place")
        return
    # One install per file: with more than one target, install takes the last for a directory.
    yield from _joined([["install", "-m", "600", "/dev/null", QuoteString(t)] for _, t in staged])
    for entry, tmp in staged:
        source = entry["src"] if "src" in entry else BytesIO(entry["content"].encode())
        yield FileUploadCommand(source, tmp)
    yield from _joined(
        fixed
        + [
            [*_chown_chmod(tmp, entry, FILE_MODE), "&&", "mv", QuoteString(tmp),
             QuoteString(entry["dest"])]
            for entry, tmp in staged
        ]
    )  # fmt: skip


@operation()
def directories(entries: list[DirEntry]):
    """
    Directories with the given owner and mode; all of them read in one command.

    + entries: ``{"path", "user", "group", "mode"}`` each (root, root, 755 by default)

    A missing one is made (with its parents); one with another owner or mode is given them; a
    path that exists as anything but a directory fails the operation.

    **Example:**

    .. code:: python

        paths.directories(entries=[{"path": "/etc/llmhost", "group": "vllm", "mode": "750"}])
    """
    states = fact(PathStates, paths=[e["path"] for e in entries])
    parts: list[list[object]] = []
    for entry, state in zip(entries, states, strict=True):
        if state is not None and state["type"] != "directory":
            raise OperationError(f"{entry['path']} exists and is not a directory ({state['type']})")
        if directory_in_place(state, entry):
            continue
        if state is None:
            parts.append(["mkdir", "-p", QuoteString(entry["path"])])
        parts.append(_chown_chmod(entry["path"], entry, DIR_MODE))
    if not parts:
        host.noop(f"{len(entries)} director(y/ies) already in place")
        return
    yield from _joined(parts)
