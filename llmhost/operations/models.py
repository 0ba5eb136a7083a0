"""Model snapshots on the host: pushed from a local directory, or downloaded from the hub."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.facts.files import FileContents
from pyinfra.operations import files

from llmhost.layout import MODEL_MARKER
from llmhost.operations.marks import written_last

# What vLLM reads from a checkpoint; the rest of a hub repo (other formats, images) is skipped.
HUB_PATTERNS = ("*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja")


def local_digest(src: str | Path) -> str:
    """A digest of every file's path and content under ``src``."""
    root = Path(src)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MODEL_MARKER):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with path.open("rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


@operation()
def local(src: str, dest: str):
    """
    Push a model directory from the controller; skipped when the host has the same files.

    + src: model directory on the controller (config.json, safetensors, tokenizer)
    + dest: directory on the host

    A marker holding the digest of the local files is written after the transfer, so a
    half-copied model is never taken for a complete one; a re-run sends only what differs.

    **Example:**

    .. code:: python

        models.local(src="/data/tiny-llama", dest="/srv/llmhost/models/tiny-llama")
    """
    if not (Path(src) / "config.json").is_file():
        raise ValueError(f"{src}: not a model directory (no config.json)")
    digest = local_digest(src)
    if host.get_fact(FileContents, path=f"{dest}/{MODEL_MARKER}") == [digest]:
        host.noop(f"model {dest} already complete")
        return
    yield StringCommand("rm", "-f", QuoteString(f"{dest}/{MODEL_MARKER}"))
    yield from files.sync._inner(
        src=src, dest=dest, mode="644", dir_mode="755", exclude=MODEL_MARKER, add_deploy_dir=False
    )
    yield written_last(f"{dest}/{MODEL_MARKER}", digest)


@operation()
def hub(
    repo: str,
    revision: str,
    dest: str,
    venv: str,
    user: str,
    token_file: str | None = None,
    patterns: Iterable[str] = HUB_PATTERNS,
):
    """
    Download one pinned revision of a hub repo as the service user; skipped when complete.

    + repo: hub repo id
    + revision: the commit sha to download
    + dest: directory on the host
    + venv: the venv whose ``hf`` command (huggingface-hub) does the download
    + user: the user who runs the download and owns the files
    + token_file: a 0600 file on the host holding the token, for gated repos
    + patterns: the files to download

    ``hf download`` resumes an interrupted download; the marker is written only after it
    finished, so a partial snapshot is never served.

    **Example:**

    .. code:: python

        models.hub(
            repo="Qwen/Qwen2.5-7B-Instruct-AWQ",
            revision="b25037543e9394b818fdfca67ab2a00ecc7dd641",
            dest="/srv/llmhost/models/qwen7b",
            venv="/opt/llmhost/venvs/3f2a9c0d1e4b5a69",
            user="vllm",
        )
    """
    if host.get_fact(FileContents, path=f"{dest}/{MODEL_MARKER}") == [revision]:
        host.noop(f"model {repo}@{revision[:12]} already complete")
        return
    env = ["HF_HUB_DISABLE_TELEMETRY=1", "HF_HUB_ENABLE_HF_TRANSFER=0"]
    if token_file:
        # The token is read from a file; it never appears on a command line.
        env.append(QuoteString(f"HF_TOKEN_PATH={token_file}"))
    includes = [part for p in patterns for part in ("--include", QuoteString(p))]
    yield StringCommand("install", "-d", "-o", user, "-m", "755", QuoteString(dest))
    yield StringCommand(
        "runuser",
        "-u",
        user,
        "--",
        "env",
        *env,
        QuoteString(f"{venv}/bin/hf"),
        "download",
        QuoteString(repo),
        "--revision",
        QuoteString(revision),
        "--local-dir",
        QuoteString(dest),
        *includes,
    )
    yield written_last(f"{dest}/{MODEL_MARKER}", revision)
