"""The planner's hub path against a real Hugging Face mirror: Olah, serving a tiny model from a
local git repository under a hub-style name, as a site's mirror would (``llmhost_hf_endpoint``).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from llmhost.plan.catalogue import ModelMetaError, resolve
from llmhost.settings import ModelSpec

REPO = "llmhost-lab/tiny-mirror"
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_size": 256,
    "intermediate_size": 512,
    "vocab_size": 4096,
    "max_position_embeddings": 2048,
    "torch_dtype": "bfloat16",
}


@dataclass(frozen=True)
class Mirror:
    endpoint: str
    revision: str
    weights_bytes: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _commit_model(root: Path) -> tuple[str, int]:
    """A git repository holding a tiny model, as a site's mirror keeps one: its commit, and
    the weights' size."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(CONFIG))
    save_file({"embed": np.zeros((4096, 256), dtype=np.float16)}, root / "model.safetensors")
    git = ["git", "-C", str(root), "-c", "user.name=lab", "-c", "user.email=lab@llmhost"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "tiny"]):
        subprocess.run([*git, *args], check=True)
    revision = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return revision, (root / "model.safetensors").stat().st_size


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    top = tmp_path_factory.mktemp("hub")
    revision, size = _commit_model(top / "mirrors" / "models" / REPO)
    port = _free_port()
    (top / "olah.toml").write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {port}\nrepos-path = "{top / "cache"}"\n'
        f'mirrors-path = ["{top / "mirrors"}"]\n'
        f'mirror-scheme = "http"\nmirror-netloc = "127.0.0.1:{port}"\n'
        f'mirror-lfs-netloc = "127.0.0.1:{port}"\n'
        "[accessibility]\noffline = true\n"
    )
    olah = Path(sys.executable).with_name("olah-cli")
    # Offline: nothing but the local repositories; it writes its logs under its cwd.
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
    proc = subprocess.Popen([olah, "-c", top / "olah.toml"], cwd=top, **quiet)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{endpoint}/api/models/{REPO}/revision/{revision}")
                break
            except OSError:
                assert proc.poll() is None, "olah exited"
                time.sleep(0.25)
        yield Mirror(endpoint, revision, size)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _hub(revision: str) -> ModelSpec:
    return ModelSpec.model_validate({"source": "hub", "repo": REPO, "revision": revision})


def test_a_pinned_revision_resolves_with_its_real_weight_size(mirror: Mirror) -> None:
    # The mirror lists the files without sizes: planning with 0 bytes of weights would give
    # their memory to the KV cache.
    meta = resolve(_hub(mirror.revision), endpoint=mirror.endpoint)
    assert meta.weights_bytes == mirror.weights_bytes
    assert (meta.num_layers, meta.hidden_size) == (2, 256)


def test_a_revision_the_mirror_lacks_is_refused(mirror: Mirror) -> None:
    with pytest.raises(ModelMetaError) as err:
        resolve(_hub("0" * 40), endpoint=mirror.endpoint)
    assert f"{REPO}@{'0' * 40}: the hub refused" in str(err.value)
