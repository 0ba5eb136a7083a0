"""Model snapshots on the host: pushed from a local directory, or downloaded from the hub."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.facts.files import FileContents
from pyinfra.operations import files

from llmhost.facts.batch import fact
from llmhost.facts.jobs import Job
from llmhost.operations import jobs
from llmhost.operations.digests import tree_digest
from llmhost.operations.marks import written_last
from llmhost.remote import hub_resume, snapshot
from llmhost.remote import run as remote

# What vLLM reads from a checkpoint; the rest of a hub repo (other formats, images) is skipped.
HUB_PATTERNS = ("*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja")


def local_digest(src: str | Path, marker: str) -> str:
    """A digest of every file's path and content under ``src`` but the marker's (remembered by
    stat on the controller: a no-op run does not read the weights again)."""
    return tree_digest(Path(src), skip=PurePosixPath(marker).name)


@operation()
def local(src: str, dest: str, marker: str):
    """
    Push a model directory from the controller; skipped when the host has the same files.

    + src: model directory on the controller (config.json, safetensors, tokenizer)
    + dest: directory on the host
    + marker: a file in ``dest``, written last with the digest of the local files

    The marker is written after the transfer, so a half-copied model is never taken for a
    complete one; a re-run sends only what differs.

    **Example:**

    .. code:: python

        models.local(
            src="/data/tiny-llama",
            dest="/srv/llmhost/models/tiny-llama",
            marker="/srv/llmhost/models/tiny-llama/.llmhost-complete",
        )
    """
    if not (Path(src) / "config.json").is_file():
        raise ValueError(f"{src}: not a model directory (no config.json)")
    digest = local_digest(src, marker)
    if fact(FileContents, path=marker) == [digest]:
        host.noop(f"model {dest} already complete")
        return
    yield StringCommand("rm", "-f", QuoteString(marker))
    name = PurePosixPath(marker).name
    yield from files.sync._inner(
        src=src, dest=dest, mode="644", dir_mode="755", exclude=name, add_deploy_dir=False
    )
    yield written_last(marker, digest)


# Run as: sh -c FETCH fetch LOCK DEST MARKER REVISION USER TOOLS VERIFY RESUME PARTIALS REPO
# PATTERN... (values never enter the script's text). The download runs as the service user.
# ``hf download`` does not resume what a killed one left (huggingface_hub 2.x downloads into a
# file of its own process): RESUME (``llmhost.remote.hub_resume``'s source) continues such
# partial files first, only when PARTIALS (hf's folder of them) holds any. ``hf download``
# checks only sizes: VERIFY (``llmhost.remote.snapshot``'s source) checks every file against the
# commit's hashes before the marker is written. It holds the tools venv's lock shared, so a new
# hub client pin waits for running downloads before it rebuilds that venv. No braced "${N}" in
# it: systemd-run expands those in its command line as variables of its own.
FETCH = """\
set -eu
lock=$1 dest=$2 marker=$3 revision=$4 user=$5 tools=$6 verify=$7 resume=$8 partials=$9
shift 9; repo=$1; shift
t0=$(date +%s)
n=$#; for p do set -- "$@" --include "$p"; done; shift "$n"
exec 9>>"$lock"; flock -s 9
install -d -o "$user" -m 755 "$dest"
echo "llmhost: downloading $repo@$revision into $dest"
as_user() { runuser -u "$user" -- "$@"; }
if find "$partials" -name '*.incomplete' 2>/dev/null | grep -q .; then
  as_user "$tools/bin/hf" models ls "$repo" --revision "$revision" -R --format json \\
    | as_user "$tools/bin/python" -B -c "$resume" "$dest" "$repo" "$revision"
fi
as_user "$tools/bin/hf" download "$repo" --revision "$revision" --local-dir "$dest" "$@"
as_user "$tools/bin/hf" models ls "$repo" --revision "$revision" -R --format json \\
  | as_user "$tools/bin/python" -B -c "$verify" "$dest" "$@"
echo "$revision" > "$marker.tmp" && mv "$marker.tmp" "$marker"
size=$(du -sb "$dest" | cut -f 1)
echo "llmhost: downloaded $((size / 1048576)) MiB in $(($(date +%s) - t0)) s"
"""


@operation()
def hub(
    repo: str,
    revision: str,
    dest: str,
    marker: str,
    unit: str,
    tools: str,
    user: str,
    token_file: str | None = None,
    patterns: Iterable[str] = HUB_PATTERNS,
    endpoint: str | None = None,
):
    """
    Start downloading one pinned revision of a hub repo, as the service user, in a background
    job (``jobs.finished`` waits for it); nothing to do when complete or under way.

    + repo: hub repo id
    + revision: the commit sha to download
    + dest: directory on the host
    + marker: the file written last, holding ``revision``, once the snapshot is complete
    + unit: the job's transient unit (``llmhost-fetch-<snapshot>.service``)
    + tools: the venv whose ``hf`` command (huggingface-hub) does the download
    + user: the user who runs the download and owns the files
    + token_file: a 0600 file on the host holding the token, for gated repos
    + endpoint: the hub to download from, e.g. a site's mirror (None: the public hub)
    + patterns: the files to download

    The job goes on when the controller is lost and runs beside the venv install.
    A download killed half-way resumes: the next run fetches only the rest of the file it
    left. The marker is written only after it finished, so a partial snapshot is never served.

    **Example:**

    .. code:: python

        models.hub(
            repo="Qwen/Qwen2.5-7B-Instruct-AWQ",
            revision="b25037543e9394b818fdfca67ab2a00ecc7dd641",
            dest="/srv/llmhost/models/qwen7b",
            marker="/srv/llmhost/models/qwen7b/.llmhost-complete",
            unit="llmhost-fetch-qwen7b.service",
            tools="/opt/llmhost/tools",
            user="vllm",
        )
    """
    job = fact(Job, unit=unit, done=marker, watch=dest)
    if job["done"] == revision:
        host.noop(f"model {repo}@{revision[:12]} already complete")
        return
    if job["running"]:
        host.noop(f"model {repo}@{revision[:12]} already being downloaded by {unit}")
        return
    env = {
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ENABLE_HF_TRANSFER": "0",
        # Bars redrawn with \r make one endless journal line; the deploy shows the bytes.
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    if token_file:
        # The token is read from a file; it never appears on a command line.
        env["HF_TOKEN_PATH"] = token_file
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    verify = remote.source(snapshot)
    resume = remote.source(hub_resume)
    # Where hf keeps its metadata and partial downloads in ``dest``.
    partials = posixpath.join(dest, snapshot.HF_METADATA)
    args = [f"{tools}.lock", dest, marker, revision, user, tools, verify, resume, partials, repo,
            *patterns]  # fmt: skip
    yield from jobs.start(
        unit,
        f"llmhost: download {repo}@{revision[:12]} into {dest}",
        ["sh", "-c", FETCH, "fetch", *args],
        environment=env,
    )
