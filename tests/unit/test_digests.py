"""The controller's remembered digests: the same answer as reading every file, files not read
again while unchanged, and a change noticed even when the size and mtime are put back."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from llmhost.operations import digests


def _read_all(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "skip"):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@pytest.fixture
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(digests, "CACHE", tmp_path / "cache" / "digests.json")
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"a": 1}')
    (root / "sub" / "weights.safetensors").write_bytes(b"\x01" * 4096)
    (root / "skip").write_text("not part of it")
    return root


def test_the_digest_is_that_of_reading_every_file(model: Path) -> None:
    assert digests.tree_digest(model, skip="skip") == _read_all(model)
    # Remembered: the second answer is the same, from the cache.
    assert digests.tree_digest(model, skip="skip") == _read_all(model)
    assert len(digests._load()) == 2


def test_an_unchanged_file_is_not_read_again(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    digests.tree_digest(model, skip="skip")
    # chmod changes the ctime of the weights only: they alone are read again.
    (model / "sub" / "weights.safetensors").chmod(0o600)
    opened: list[str] = []
    real_open = Path.open

    def spy(self: Path, *args: Any, **kwargs: Any) -> Any:
        if model in self.parents:
            opened.append(self.name)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy)
    digests.tree_digest(model, skip="skip")
    assert opened == ["weights.safetensors"]


def test_a_change_with_size_and_mtime_put_back_is_noticed(model: Path) -> None:
    before = digests.tree_digest(model, skip="skip")
    weights = model / "sub" / "weights.safetensors"
    st = weights.stat()
    weights.write_bytes(b"\x02" * 4096)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = digests.tree_digest(model, skip="skip")
    assert after != before
    assert after == _read_all(model)


def test_a_removed_file_is_forgotten(model: Path) -> None:
    digests.tree_digest(model, skip="skip")
    (model / "config.json").unlink()
    assert digests.tree_digest(model, skip="skip") == _read_all(model)
    assert len(digests._load()) == 1
