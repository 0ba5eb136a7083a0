from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from llmhost.plan import catalogue
from llmhost.plan.catalogue import (
    ModelMeta,
    ModelMetaError,
    catalogue_entry,
    from_local_dir,
    resolve,
)
from llmhost.settings import ModelSpec

ENTRIES = {
    path.stem: json.loads(path.read_text()) for path in catalogue.CATALOGUE_DIR.glob("*.json")
}

# FACTS.md's model table: layers, kv heads, head dim, max positions, AWQ weights on disk (GB).
FACTS = {
    "TheBloke/deepseek-coder-33B-instruct-AWQ": (62, 8, 128, 16384, 18.0),
    "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ": (64, 8, 128, 32768, 19.3),
    "Qwen/Qwen2.5-14B-Instruct-AWQ": (48, 8, 128, 32768, None),
    "Qwen/Qwen2.5-7B-Instruct-AWQ": (28, 4, 128, 32768, 5.6),
    "TheBloke/Mistral-7B-Instruct-v0.2-AWQ": (32, 8, 128, 32768, 4.15),
}


def _entry(repo: str) -> dict[str, Any]:
    return next(e for e in ENTRIES.values() if e["repo"] == repo)


def test_catalogue_holds_the_five_models() -> None:
    assert {e["repo"] for e in ENTRIES.values()} == set(FACTS)


@pytest.mark.parametrize("stem", sorted(ENTRIES))
def test_entry_says_where_its_revision_came_from(stem: str) -> None:
    entry = ENTRIES[stem]
    assert stem == entry["repo"].replace("/", "--")
    assert re.fullmatch(r"[0-9a-f]{40}", entry["revision"])
    assert entry["revision_source"] and entry["config_source"] and entry["weights_bytes_source"]


@pytest.mark.parametrize("repo", sorted(FACTS))
def test_metadata_matches_facts_table(repo: str) -> None:
    layers, kv_heads, head_dim, max_pos, weights_gb = FACTS[repo]
    entry = _entry(repo)
    meta = ModelMeta.from_config(entry["config"], entry["weights_bytes"])
    assert (meta.num_layers, meta.num_kv_heads, meta.head_dim) == (layers, kv_heads, head_dim)
    assert meta.max_position_embeddings == max_pos
    assert meta.quantization == "awq"
    assert meta.sliding_window is None
    if weights_gb is not None:
        assert meta.weights_bytes / 1e9 == pytest.approx(weights_gb, abs=0.05)


def test_deepseek_limit_is_what_vllm_derives_from_linear_rope() -> None:
    entry = _entry("TheBloke/deepseek-coder-33B-instruct-AWQ")
    meta = ModelMeta.from_config(entry["config"], entry["weights_bytes"])
    assert meta.max_position_embeddings == 16384
    assert meta.max_model_len_limit == 65536
    assert meta.rope_scaling == "linear x4"


BASE = {"hidden_size": 256, "num_attention_heads": 4, "num_hidden_layers": 2}


@pytest.mark.parametrize(
    ("extra", "limit"),
    [
        ({"max_position_embeddings": 2048}, 2048),
        ({"max_position_embeddings": 2048, "rope_scaling": {"type": "dynamic", "factor": 2}}, 4096),
        (
            {
                "max_position_embeddings": 131072,
                "rope_scaling": {
                    "rope_type": "yarn",
                    "factor": 4.0,
                    "original_max_position_embeddings": 32768,
                },
            },
            131072,
        ),
        (
            {
                "max_position_embeddings": 131072,
                "rope_scaling": {"rope_type": "llama3", "factor": 8},
            },
            131072,
        ),
        ({"max_position_embeddings": 4096, "seq_length": 2048}, 2048),
    ],
)
def test_max_model_len_limit(extra: dict[str, Any], limit: int) -> None:
    assert ModelMeta.from_config({**BASE, **extra}, 0).max_model_len_limit == limit


def test_head_dim_derived_or_given_and_kv_heads_default() -> None:
    derived = ModelMeta.from_config({**BASE, "max_position_embeddings": 2048}, 0)
    assert (derived.head_dim, derived.num_kv_heads) == (64, 4)
    given = ModelMeta.from_config(
        {**BASE, "max_position_embeddings": 2048, "head_dim": 128, "num_key_value_heads": 2}, 0
    )
    assert (given.head_dim, given.num_kv_heads) == (128, 2)


def test_sliding_window_only_when_switched_on() -> None:
    on = ModelMeta.from_config(
        {**BASE, "max_position_embeddings": 32768, "sliding_window": 4096}, 0
    )
    off = ModelMeta.from_config(
        {
            **BASE,
            "max_position_embeddings": 32768,
            "sliding_window": 4096,
            "use_sliding_window": False,
        },
        0,
    )
    assert (on.sliding_window, off.sliding_window) == (4096, None)


def test_config_without_a_length_is_refused() -> None:
    with pytest.raises(ModelMetaError, match="max_position_embeddings"):
        ModelMeta.from_config(BASE, 0)


def _model_dir(root: Path) -> Path:
    root.mkdir()
    (root / "config.json").write_text(json.dumps({**BASE, "max_position_embeddings": 2048}))
    save_file({"w": np.zeros((64, 64), dtype=np.float16)}, str(root / "model.safetensors"))
    return root


def test_local_dir_sums_safetensors(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    meta = from_local_dir(model)
    assert meta.weights_bytes == (model / "model.safetensors").stat().st_size
    assert meta.num_layers == 2


def test_local_dir_prefers_index_total_size(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    index = {"metadata": {"total_size": 123456}, "weight_map": {"w": "model.safetensors"}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    assert from_local_dir(model).weights_bytes == 123456


def test_local_dir_without_config_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelMetaError, match=re.escape(str(tmp_path / "config.json"))):
        from_local_dir(tmp_path)


def test_local_dir_without_weights_names_the_dir(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({**BASE, "max_position_embeddings": 2048}))
    with pytest.raises(ModelMetaError, match=r"no \*\.safetensors"):
        from_local_dir(tmp_path)


def test_an_entry_is_one_revision() -> None:
    assert catalogue_entry("TheBloke/Mistral-7B-Instruct-v0.2-AWQ", "a" * 40) is None
    assert catalogue_entry(
        "TheBloke/Mistral-7B-Instruct-v0.2-AWQ", "f970a2bb89d5c2f9d217dc337f39e24625d6462a"
    )


def _hub(repo: str, revision: str) -> ModelSpec:
    return ModelSpec.model_validate({"source": "hub", "repo": repo, "revision": revision})


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: object, **kwargs: object) -> ModelMeta:
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(catalogue, "from_hub", unreachable)


def test_resolve_uses_the_catalogue_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    _offline(monkeypatch)
    revision = _entry("Qwen/Qwen2.5-7B-Instruct-AWQ")["revision"]
    meta = resolve(_hub("Qwen/Qwen2.5-7B-Instruct-AWQ", revision))
    assert meta.num_layers == 28


def test_resolve_unknown_model_names_repo_revision_and_the_hub_that_did_not_answer() -> None:
    # The real client against a hub address where nothing listens (a port just freed).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(ModelMetaError) as err:
        resolve(_hub("someone/unknown-model", "b" * 40), endpoint=endpoint)
    message = str(err.value)
    assert "someone/unknown-model@" + "b" * 40 in message
    assert f"not in the catalogue and the hub at {endpoint} is unreachable" in message
    assert "llmhost_hf_endpoint" in message


def test_resolve_local_source(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    spec = ModelSpec.model_validate({"source": "local", "path": str(model)})
    assert resolve(spec).num_layers == 2
