"""Runs on a host, in a model download job, before ``hf download``, on the tools venv's python
(it needs huggingface_hub): it continues what a killed download left, so that the re-run
fetches only the rest of a file.

huggingface_hub 2.x does not resume across processes. It downloads a file into a name of its
own process (``<hash>.<etag>.<8 hex>.incomplete`` beside the file's metadata, since its PR 4228),
opened afresh, and removes it only when the download ends in Python: a job killed (SIGKILL, the
OOM killer, a reboot) leaves its partial file behind, and no later run reads it. The re-run
starts from byte 0, and every partial stays on the disk.

Here each partial file of a file of the commit (``hf models ls REPO --revision SHA -R --format
json``, on stdin), whose ETag is its sha256 (an LFS file, as the hub and mirrors name them), is
continued from its last byte with huggingface_hub's own ``http_get`` (the job's endpoint, token
and proxies; a server that ignores the range sends it all again) and put in place without
metadata: ``hf download`` then hashes it, finds the ETag, and keeps it. Every other partial
file is removed. It never fails the job: what it could not continue, ``hf download`` fetches.

    hf models ls ... --format json | python3 hub_resume.py DEST REPO REVISION
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import sys
from pathlib import Path

SAYS = "llmhost: "
HF_METADATA = os.path.join(".cache", "huggingface", "download")
PARTIAL = re.compile(
    r"^(?P<file>[A-Za-z0-9_=-]+)\.(?P<etag>[0-9a-f]{64})\.[0-9a-f]{8}\.incomplete$"
)


def short_hash(path: str) -> str:
    """How huggingface_hub names a file's partial downloads: from its metadata file's name."""
    name = os.path.basename(path) + ".metadata"
    return base64.urlsafe_b64encode(hashlib.sha1(name.encode()).digest()).decode()


def partials(dest: str, listing: list[dict]) -> tuple[dict[str, list[Path]], list[Path]]:
    """The partial files of each LFS file of the commit (path -> the largest first), and the
    partial files of nothing the commit has."""
    lfs = {}
    for entry in listing:
        sha256 = (entry.get("lfs") or {}).get("sha256")
        if sha256:
            lfs[(short_hash(entry["path"]), sha256)] = entry["path"]
    found: dict[str, list[Path]] = {}
    stale = []
    for partial in sorted(Path(dest, HF_METADATA).rglob("*.incomplete")):
        match = PARTIAL.match(partial.name)
        path = lfs.get((match["file"], match["etag"])) if match else None
        if path is None or os.path.isfile(os.path.join(dest, path)):
            stale.append(partial)
        else:
            found.setdefault(path, []).append(partial)
    for files in found.values():
        files.sort(key=lambda p: p.stat().st_size, reverse=True)
    return found, stale


def resume(dest: str, repo: str, revision: str, path: str, partial: Path) -> int:
    """Fetch the rest of ``path`` into ``partial`` and put it in place; the bytes fetched."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get, is_xet_available
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(repo, path, revision=revision, endpoint=os.environ.get("HF_ENDPOINT"))
    meta = get_hf_file_metadata(url)
    kept = partial.stat().st_size
    if meta.etag != PARTIAL.match(partial.name)["etag"] or meta.size is None:  # type: ignore[index]
        raise ValueError(f"the hub has ETag {meta.etag}, size {meta.size} for it now")
    if meta.xet_file_data is not None and is_xet_available() and not constants.HF_HUB_DISABLE_XET:
        # hf fetches it by Xet, whose partial file is not known to be a prefix of the file.
        raise ValueError("the hub serves it by Xet")
    with partial.open("ab") as f:
        # The redirect to a CDN, if any, is followed without the token (httpx drops it).
        http_get(url, f, resume_size=kept, headers=build_hf_headers(), expected_size=meta.size)
    target = Path(dest, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # hf trusts a file whose metadata names the ETag; without metadata, it hashes the file.
    Path(dest, HF_METADATA, path + ".metadata").unlink(missing_ok=True)
    partial.chmod(0o644)
    os.replace(partial, target)
    return meta.size - kept


def main(dest: str, repo: str, revision: str) -> int:
    try:
        found, stale = partials(dest, json.load(sys.stdin))
    except (ValueError, KeyError, TypeError) as e:
        print(f"{SAYS}could not read the commit's file list, no download resumed: {e!r}")
        return 0
    for partial in stale:
        partial.unlink(missing_ok=True)
    for path, (partial, *others) in sorted(found.items()):
        for other in others:
            other.unlink(missing_ok=True)
        kept = partial.stat().st_size
        try:
            fetched = resume(dest, repo, revision, path, partial)
        except Exception as e:  # any failure: the file is left to hf download
            print(f"{SAYS}{path}: not resumed ({e}); hf download fetches it all")
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            continue
        print(f"{SAYS}{path}: resumed a killed download: {kept} bytes kept, {fetched} fetched")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
