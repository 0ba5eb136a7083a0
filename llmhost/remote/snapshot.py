"""Runs on a host, in a model download job, after ``hf download``: every file of the snapshot
is checked against the hashes of the pinned commit, before the job marks the snapshot complete.

``hf download`` checks only sizes, and a mirror serves what its store holds: a weight file
corrupted or truncated there after it was published arrives as it is (a mirror's ``Content-Length``
and ETag are taken from the bad file, so they agree with it). The commit's own hashes do not
move: an LFS file's sha256 and a plain file's git blob id, as the hub lists them
(``hf models ls REPO --revision SHA -R --format json``, on stdin).

    hf models ls ... --format json | python3 snapshot.py DEST --include PATTERN ...

A file that does not match is removed with its ``hf download`` metadata, so the next run
fetches it again instead of keeping it; the exit status is then 1. Standard library only.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import sys
from collections.abc import Iterable

SAYS = "llmhost: "
CHUNK = 1 << 24
# Where ``hf download --local-dir`` keeps what it knows of each file (it trusts a file whose
# metadata names the commit, and would not fetch it again).
HF_METADATA = os.path.join(".cache", "huggingface", "download")


def expected(listing: Iterable[dict], patterns: list[str]) -> dict[str, tuple[str, str]]:
    """The files the download takes: path -> (hash kind, hex digest) of the commit."""
    found = {}
    for entry in listing:
        path = entry.get("path", "")
        if "blob_id" not in entry or not any(fnmatch.fnmatch(path, p) for p in patterns):
            continue
        lfs = entry.get("lfs") or {}
        found[path] = ("sha256", lfs["sha256"]) if lfs.get("sha256") else ("git", entry["blob_id"])
    return found


def digest(path: str, kind: str) -> str:
    """sha256 of the content (LFS), or its git blob id: sha1 of ``blob <size>\\0`` + content."""
    hasher = hashlib.sha256() if kind == "sha256" else hashlib.sha1()
    if kind == "git":
        hasher.update(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def mismatches(dest: str, wanted: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Each file that is missing or differs from the commit: what was found."""
    bad = {}
    for path, (kind, want) in sorted(wanted.items()):
        local = os.path.join(dest, path)
        if not os.path.isfile(local):
            bad[path] = "missing"
            continue
        got = digest(local, kind)
        if got != want:
            bad[path] = f"{kind} {got}, the commit's is {want}"
    return bad


def forget(dest: str, path: str) -> None:
    """Remove a bad file and ``hf download``'s record of it."""
    for name in (os.path.join(dest, path), os.path.join(dest, HF_METADATA, path + ".metadata")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)


def main(dest: str, *args: str) -> int:
    patterns = [p for flag, p in zip(args[::2], args[1::2], strict=False) if flag == "--include"]
    try:
        wanted = expected(json.load(sys.stdin), patterns)
    except (ValueError, KeyError, TypeError) as e:
        print(f"{SAYS}could not read the commit's file list: {e!r}")
        return 1
    if not wanted:
        print(f"{SAYS}the hub lists no file of the commit that the download takes")
        return 1
    bad = mismatches(dest, wanted)
    for path, found in bad.items():
        forget(dest, path)
        print(f"{SAYS}{path}: {found}; removed, the next run fetches it again")
    if bad:
        return 1
    size = sum(os.path.getsize(os.path.join(dest, p)) for p in wanted)
    print(f"{SAYS}verified {len(wanted)} files ({size // 1048576} MiB) against the commit")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
