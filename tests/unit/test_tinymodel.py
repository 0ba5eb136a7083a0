from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jinja2
import numpy as np
import pytest
from safetensors import deserialize
from tokenizers import Tokenizer

from llmhost_lab import tinymodel
from llmhost_lab.tinymodel import FILES, MARKER, ensure, generate, is_complete


def _digests(model: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(model.iterdir())}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("m") / "tiny", seed=7)


def test_same_seed_gives_identical_bytes(model: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", seed=7)
    assert _digests(again) == _digests(model)


def test_other_seed_changes_only_weights_and_marker(model: Path, tmp_path: Path) -> None:
    other = _digests(generate(tmp_path / "other", seed=8))
    changed = {f for f, digest in _digests(model).items() if other[f] != digest}
    assert changed == {"model.safetensors", MARKER}


def test_files_and_size(model: Path) -> None:
    assert {p.name for p in model.iterdir()} == {*FILES, MARKER}
    total = sum(p.stat().st_size for p in model.iterdir())
    assert 6_000_000 < total < 7_500_000
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in model.iterdir())


def test_config_fields(model: Path) -> None:
    config = json.loads((model / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["model_type"] == "llama"
    assert (
        config["hidden_size"],
        config["num_hidden_layers"],
        config["num_attention_heads"],
        config["num_key_value_heads"],
        config["head_dim"],
        config["vocab_size"],
        config["max_position_embeddings"],
    ) == (256, 2, 4, 2, 64, 4096, 2048)
    assert config["torch_dtype"] == "bfloat16"
    assert config["head_dim"] * config["num_attention_heads"] == config["hidden_size"]
    generation = json.loads((model / "generation_config.json").read_text())
    assert config["eos_token_id"] in generation["eos_token_id"]


def test_weights_load_as_bf16_with_config_shapes(model: Path) -> None:
    config = json.loads((model / "config.json").read_text())
    tensors = dict(deserialize((model / "model.safetensors").read_bytes()))
    assert {t["dtype"] for t in tensors.values()} == {"BF16"}
    h, v = config["hidden_size"], config["vocab_size"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    assert tensors["model.embed_tokens.weight"]["shape"] == [v, h]
    assert tensors["lm_head.weight"]["shape"] == [v, h]
    assert tensors["model.layers.1.self_attn.k_proj.weight"]["shape"] == [kv, h]
    assert f"model.layers.{config['num_hidden_layers']}.mlp.up_proj.weight" not in tensors
    # bf16 bits widened to float32: random weights near std 0.02, norms exactly 1.
    q = np.frombuffer(tensors["model.layers.0.self_attn.q_proj.weight"]["data"], np.uint16)
    values = (q.astype(np.uint32) << 16).view(np.float32)
    assert 0.015 < values.std() < 0.025
    norm = np.frombuffer(tensors["model.norm.weight"]["data"], np.uint16)
    assert set((norm.astype(np.uint32) << 16).view(np.float32).tolist()) == {1.0}


def test_bf16_rounds_to_nearest_even() -> None:
    x = np.array([1.0, 1.00390625, 1.01171875, -2.5], dtype=np.float32)
    # 1 + 2^-8 lies halfway between two bf16 values: ties go to the even mantissa.
    assert tinymodel._to_bf16_bits(x).tolist() == [0x3F80, 0x3F80, 0x3F82, 0xC020]


def test_tokenizer_round_trips_any_text(model: Path) -> None:
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == 4096
    text = "Hello, world! def f(x): return x + 1\n Ünïcödé 日本"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_chat_template_renders_special_tokens(model: Path) -> None:
    tok_config = json.loads((model / "tokenizer_config.json").read_text())
    prompt = jinja2.Template(tok_config["chat_template"]).render(
        messages=[{"role": "user", "content": "hi"}],
        add_generation_prompt=True,
        bos_token=tok_config["bos_token"],
    )
    assert prompt == "<|begin_of_text|><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    ids = tokenizer.encode(prompt).ids
    config = json.loads((model / "config.json").read_text())
    assert ids[0] == config["bos_token_id"]
    assert (
        tokenizer.token_to_id(tok_config["eos_token"])
        in json.loads((model / "generation_config.json").read_text())["eos_token_id"]
    )


def test_ensure_skips_a_complete_model(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_args: object, **_kwargs: object) -> Path:
        raise AssertionError("ensure rebuilt a complete model")

    monkeypatch.setattr(tinymodel, "generate", fail)
    assert ensure(model, seed=7) == model


def test_ensure_rebuilds_other_seed_or_damaged_files(tmp_path: Path) -> None:
    dest = ensure(tmp_path / "m", seed=1)
    first = _digests(dest)
    assert is_complete(dest, seed=1)
    assert not is_complete(dest, seed=2)
    assert not is_complete(dest, seed=1, name="other")

    ensure(dest, seed=2)
    assert _digests(dest)["model.safetensors"] != first["model.safetensors"]

    with (dest / "model.safetensors").open("r+b") as f:
        f.truncate(100)
    assert not is_complete(dest, seed=2)
    ensure(dest, seed=2)
    assert is_complete(dest, seed=2)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging or trash left behind


def test_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_out: Path) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(tinymodel, "_write_tokenizer", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(tmp_path / "m", seed=0)
    assert list(tmp_path.iterdir()) == []
