"""The download job's resume of a download killed half-way (``llmhost.remote.hub_resume``):
huggingface_hub 2.4.0 downloads into a file of its own process and never reads what a killed
one left, so the re-run fetched the whole file again (found by the killed-download drill,
tests/integration/test_hub.py). Against a hub of a few lines here, with hf's own code."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from huggingface_hub import hf_hub_download
from huggingface_hub._local_folder import get_local_download_paths

from llmhost.remote import hub_resume, snapshot

REPO = "org/model"
REVISION = "a" * 40
WEIGHTS = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(WEIGHTS).hexdigest()
KEPT = 300_000


class Hub(BaseHTTPRequestHandler):
    """A file of the hub: HEAD and GET, a range (unless ``ranges`` is off), the bytes sent."""

    sent: ClassVar[list[tuple[str, int]]] = []
    ranges: ClassVar[bool] = True

    def do_HEAD(self) -> None:
        self._answer(0, body=False)

    def do_GET(self) -> None:
        asked = self.headers.get("range", "")
        start = int(asked[6:-1]) if asked and self.ranges else 0
        self._answer(start, body=True)

    def _answer(self, start: int, body: bool) -> None:
        if not self.path.endswith("/model.safetensors"):
            self.send_error(404)
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(WEIGHTS) - 1}/{len(WEIGHTS)}")
        self.send_header("X-Repo-Commit", REVISION)
        self.send_header("ETag", f'"{SHA}"')
        self.send_header("Content-Length", str(len(WEIGHTS) - start))
        self.end_headers()
        if body:
            self.wfile.write(WEIGHTS[start:])
            self.sent.append((self.headers.get("range", ""), len(WEIGHTS) - start))

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hub.sent, Hub.ranges = [], True
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    yield endpoint
    server.shutdown()


def _killed(dest: Path, size: int = KEPT, etag: str = SHA, process: str = "0badcafe") -> Path:
    """What a download killed after ``size`` bytes left, named as huggingface_hub names it."""
    incomplete = get_local_download_paths(dest, "model.safetensors").incomplete_path(etag)
    partial = incomplete.with_name(f"{incomplete.stem}.{process}.incomplete")
    partial.write_bytes(WEIGHTS[:size])
    return partial


def _resume(dest: Path, monkeypatch: pytest.MonkeyPatch, sha: str = SHA) -> int:
    listing = [
        {"path": "config.json", "size": 2, "blob_id": "1" * 40},
        {"path": "model.safetensors", "size": len(WEIGHTS), "blob_id": "0" * 40,
         "lfs": {"size": len(WEIGHTS), "sha256": sha}},
    ]  # fmt: skip
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(listing)))
    return hub_resume.main(str(dest), REPO, REVISION)


def _download(dest: Path, endpoint: str) -> None:
    hf_hub_download(REPO, "model.safetensors", revision=REVISION, local_dir=dest,
                    endpoint=endpoint)  # fmt: skip


def test_hf_itself_fetches_all_of_it_again(hub: str, tmp_path: Path) -> None:
    partial = _killed(tmp_path)
    _download(tmp_path, hub)
    assert Hub.sent == [("", len(WEIGHTS))]
    assert partial.exists(), "hf read the killed download's file after all: drop hub_resume?"


def test_the_rest_only_is_fetched_and_hf_keeps_it(
    hub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _killed(tmp_path, KEPT // 2, process="00000001")
    _killed(tmp_path)
    stale = _killed(tmp_path, etag="b" * 64, process="00000002")
    assert _resume(tmp_path, monkeypatch) == 0
    assert Hub.sent == [(f"bytes={KEPT}-", len(WEIGHTS) - KEPT)]
    assert (tmp_path / "model.safetensors").read_bytes() == WEIGHTS
    assert not list(stale.parent.glob("*.incomplete"))
    assert f"{KEPT} bytes kept, {len(WEIGHTS) - KEPT} fetched" in capsys.readouterr().out
    _download(tmp_path, hub)
    assert len(Hub.sent) == 1, "hf download fetched the resumed file again"


def test_a_hub_without_ranges_sends_it_all(
    hub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Hub.ranges = False
    _killed(tmp_path)
    assert _resume(tmp_path, monkeypatch) == 0
    assert Hub.sent == [(f"bytes={KEPT}-", len(WEIGHTS))]
    assert (tmp_path / "model.safetensors").read_bytes() == WEIGHTS


def test_a_partial_file_of_another_commit_is_removed(
    hub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    partial = _killed(tmp_path)
    assert _resume(tmp_path, monkeypatch, sha="c" * 64) == 0
    assert Hub.sent == [] and not partial.exists()
    assert not (tmp_path / "model.safetensors").exists()


def test_a_failure_leaves_the_file_to_hf_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    partial = _killed(tmp_path)
    assert _resume(tmp_path, monkeypatch) == 0
    assert "not resumed" in capsys.readouterr().out
    assert not partial.exists() and not (tmp_path / "model.safetensors").exists()


def test_the_resume_step_reads_hfs_metadata_where_the_snapshot_check_does() -> None:
    # Each runs on the host alone (``python -c SOURCE``), so each names the folder itself.
    assert hub_resume.HF_METADATA == snapshot.HF_METADATA
