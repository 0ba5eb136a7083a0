"""Digests of the controller's files, remembered by what ``stat`` says of each: a re-run does
not read a 20 GB model again to learn it has not changed.

A file is read again whenever its size, mtime, ctime, inode or device differ from what was
remembered. Writing a file, or restoring its mtime after (``touch -d``), changes its ctime, which
no user can set: a changed file is always noticed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from llmhost.cache import CACHE_DIR

# Where the digests are kept on the controller (one JSON file, replaced whole).
CACHE = CACHE_DIR / "digests.json"


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _load() -> dict[str, list]:
    try:
        data = json.loads(CACHE.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(known: dict[str, list]) -> None:
    try:
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = CACHE.with_name(f"{CACHE.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        tmp.replace(CACHE)
    except OSError:
        pass  # a read-only home only costs the next run a re-read


def tree_digest(root: Path, skip: str) -> str:
    """A digest of every file's path and content under ``root``, but files named ``skip``."""
    known = _load()
    prefix = f"{root.resolve()}{os.sep}"
    seen: dict[str, list | None] = {}
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != skip):
        key = str(path.resolve())
        stamp = _stamp(path.stat())
        entry = known.get(key)
        if entry and entry[:-1] == stamp:
            content = bytes.fromhex(entry[-1])
            seen[key] = entry
        else:
            with path.open("rb") as f:
                content = hashlib.file_digest(f, "sha256").digest()
            # Remembered only if the file did not change while it was read.
            seen[key] = [*stamp, content.hex()] if _stamp(path.stat()) == stamp else None
        digest.update(str(path.relative_to(root)).encode() + b"\0" + content)
    # What was under root and is gone (or was being written) is forgotten.
    fresh = {k: v for k, v in known.items() if not k.startswith(prefix)}
    fresh.update({k: v for k, v in seen.items() if v is not None})
    if fresh != known:
        _save(fresh)
    return digest.hexdigest()
