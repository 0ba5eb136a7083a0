"""The download job's check of a snapshot against its commit (``llmhost.remote.snapshot``):
``hf download`` checks sizes only, so a file corrupted on a mirror arrived whole and was marked
complete (found by the corrupted-file drill, tests/integration/test_hub.py)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from llmhost.remote import snapshot

WEIGHTS = b"\x01\x02" * 5000
CONFIG = b'{"model_type": "llama"}\n'


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _listing() -> list[dict]:
    """What ``hf models ls REPO -R --format json`` prints: an LFS file, a plain one, one the
    download does not take."""
    return [
        {"path": "config.json", "size": len(CONFIG), "blob_id": _blob_id(CONFIG)},
        {"path": "model.safetensors", "size": len(WEIGHTS), "blob_id": "0" * 40,
         "lfs": {"size": len(WEIGHTS), "sha256": hashlib.sha256(WEIGHTS).hexdigest()}},
        {"path": "README.md", "size": 3, "blob_id": "1" * 40},
    ]  # fmt: skip


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_bytes(CONFIG)
    (tmp_path / "model.safetensors").write_bytes(WEIGHTS)
    meta = tmp_path / snapshot.HF_METADATA
    meta.mkdir(parents=True)
    (meta / "model.safetensors.metadata").write_text("rev\netag\n0\n")
    return tmp_path


def _verify(
    dest: Path, monkeypatch: pytest.MonkeyPatch, listing: object = None, text: str | None = None
) -> int:
    stdin = text if text is not None else json.dumps(_listing() if listing is None else listing)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return snapshot.main(str(dest), "--include", "*.json", "--include", "*.safetensors")


def test_a_snapshot_equal_to_its_commit_passes(
    dest: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _verify(dest, monkeypatch) == 0
    assert "llmhost: verified 2 files" in capsys.readouterr().out


def test_a_corrupted_weight_file_fails_and_is_fetched_again_next_time(
    dest: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Same size, other bytes: what a mirror serves after bit rot in its store.
    (dest / "model.safetensors").write_bytes(b"\xff" + WEIGHTS[1:])
    assert _verify(dest, monkeypatch) == 1
    out = capsys.readouterr().out
    assert "llmhost: model.safetensors: sha256 " in out and "the commit's is" in out
    # Gone with hf download's record of it, which would make the next run trust it.
    assert not (dest / "model.safetensors").exists()
    assert not (dest / snapshot.HF_METADATA / "model.safetensors.metadata").exists()
    assert (dest / "config.json").exists()


def test_a_plain_file_is_checked_by_its_git_blob_id(
    dest: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (dest / "config.json").write_bytes(CONFIG.replace(b"llama", b"llamb"))
    assert _verify(dest, monkeypatch) == 1
    assert "llmhost: config.json: git " in capsys.readouterr().out


def test_a_missing_file_fails(dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (dest / "config.json").unlink()
    assert _verify(dest, monkeypatch) == 1


@pytest.mark.parametrize("text", ["", "Hint: not json", "[]"])
def test_no_usable_file_list_fails(dest: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    # The list comes from the hub: a failed listing must not pass for "nothing to check".
    assert _verify(dest, monkeypatch, text=text) == 1
