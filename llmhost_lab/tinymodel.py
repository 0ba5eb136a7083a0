"""A tiny random-weight Llama model that vLLM can serve, made offline (no model hub, no torch).

The lab host runs the real deploy against models built here: a 2-layer Llama (≈ 6.6 MB of bf16
weights) with a byte-level BPE tokenizer trained on a built-in synthetic corpus and a ChatML
chat template. Output is byte-identical for the same seed, so a deploy that pushes these files
sees "no change" on re-runs.

``generate`` always builds afresh; ``ensure`` builds only when ``dest`` lacks a complete model of
the same recipe, seed and name. numpy, safetensors and tokenizers (the ``lab`` extra) are
imported only when building, so ``ensure`` on an existing model needs none of them.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# Bump when any output byte changes, so ensure() rebuilds models made by an older recipe.
RECIPE = 1
MARKER = "tinymodel.json"
FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)

HIDDEN = 256
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 64
INTERMEDIATE = 512
VOCAB = 4096
MAX_POSITIONS = 2048

BOS, EOS, IM_START, IM_END = "<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (BOS, EOS, IM_START, IM_END)  # ids 0..3, in this order
# ChatML; bos is part of the template because the tokenizer adds no special tokens itself.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# The tokenizer's corpus is the same for every model seed: only the weights differ per seed.
_CORPUS_SEED = 20260101
_CORPUS_LINES = 12_000
_ONSETS = ("", "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "st", "tr", "pl")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "n", "r", "s", "t", "l", "nd")
_COMMON = ("the", "a", "of", "and", "to", "in", "is", "it", "that", "for", "on", "with", "as")
_CODE = (
    "def {w}({v}):\n    return {v} + {n}\n",
    "for {v} in range({n}):\n    print({v})\n",
    "if {v} == {n}:\n    {w}({v})\n",
    "{w} = {{'{v}': {n}, 'ok': True}}\n",
)


def generate(
    dest: Path, *, seed: int = 0, name: str = "tiny-llama", intermediate: int = INTERMEDIATE
) -> Path:
    """Build the model into ``dest`` (replacing whatever is there) and return ``dest``.

    ``intermediate`` (the MLP's width) makes a bigger model of the same architecture and
    tokenizer: 14336 makes ≈ 47 MiB of weights, for a download big enough to be cut half-way.

    Files are written into a temporary sibling directory that is renamed into place only when
    complete, so a crash never leaves a half-written model under ``dest``. Not meant for two
    processes building the same ``dest`` at once.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.new-", dir=dest.parent))
    try:
        _write_model(staging, seed=seed, name=name, intermediate=intermediate)
        staging.chmod(0o755)  # mkdtemp makes 0700; the model must be readable like any dir
        if dest.exists():
            # Move the old model aside first: rename() cannot replace a non-empty directory.
            trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            dest.rename(trash / dest.name)
            staging.rename(dest)
            shutil.rmtree(trash)
        else:
            staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def ensure(
    dest: Path, *, seed: int = 0, name: str = "tiny-llama", intermediate: int = INTERMEDIATE
) -> Path:
    """Return ``dest`` at once if it holds this model complete, else ``generate`` it."""
    dest = Path(dest)
    if is_complete(dest, seed=seed, name=name, intermediate=intermediate):
        return dest
    return generate(dest, seed=seed, name=name, intermediate=intermediate)


def is_complete(
    dest: Path, *, seed: int = 0, name: str = "tiny-llama", intermediate: int = INTERMEDIATE
) -> bool:
    """Whether ``dest`` holds every file of this recipe, seed, name and size, at its recorded
    sizes."""
    try:
        marker = json.loads((Path(dest) / MARKER).read_text(encoding="utf-8"))
        if (marker.get("recipe"), marker.get("seed"), marker.get("name")) != (RECIPE, seed, name):
            return False
        if marker.get("intermediate", INTERMEDIATE) != intermediate:
            return False
        sizes: dict[str, int] = marker["files"]
        return sizes.keys() == set(FILES) and all(
            (Path(dest) / f).stat().st_size == size for f, size in sizes.items()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _write_model(out: Path, *, seed: int, name: str, intermediate: int) -> None:
    _write_json(out / "config.json", _config(intermediate))
    _write_json(out / "generation_config.json", _generation_config())
    _write_weights(out / "model.safetensors", seed, intermediate)
    _write_tokenizer(out)
    sizes = {f: (out / f).stat().st_size for f in FILES}
    marker: dict[str, Any] = {"recipe": RECIPE, "seed": seed, "name": name, "files": sizes}
    if intermediate != INTERMEDIATE:
        # Only then: the lab's models keep their marker's bytes, hence their hub revisions.
        marker["intermediate"] = intermediate
    _write_json(out / MARKER, marker)
    for path in out.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; the service user must read every file


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _config(intermediate: int = INTERMEDIATE) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "intermediate_size": intermediate,
        "vocab_size": VOCAB,
        "max_position_embeddings": MAX_POSITIONS,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
        "torch_dtype": "bfloat16",
        "bos_token_id": SPECIAL_TOKENS.index(BOS),
        "eos_token_id": SPECIAL_TOKENS.index(EOS),
        "use_cache": True,
    }


def _generation_config() -> dict[str, Any]:
    return {
        "bos_token_id": SPECIAL_TOKENS.index(BOS),
        # A chat turn ends with <|im_end|>; plain completion with <|end_of_text|>.
        "eos_token_id": [SPECIAL_TOKENS.index(EOS), SPECIAL_TOKENS.index(IM_END)],
    }


def _shapes(intermediate: int = INTERMEDIATE) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (VOCAB, HIDDEN),
        "model.norm.weight": (HIDDEN,),
        "lm_head.weight": (VOCAB, HIDDEN),
    }
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (HIDDEN,),
            p + "post_attention_layernorm.weight": (HIDDEN,),
            p + "self_attn.q_proj.weight": (HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.k_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.v_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.o_proj.weight": (HIDDEN, HEADS * HEAD_DIM),
            p + "mlp.gate_proj.weight": (intermediate, HIDDEN),
            p + "mlp.up_proj.weight": (intermediate, HIDDEN),
            p + "mlp.down_proj.weight": (HIDDEN, intermediate),
        }
    return shapes


def _to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns as uint16, rounding to nearest even (as torch does)."""
    import numpy as np

    bits = x.astype(np.float32).view(np.uint32)
    return ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)


def _write_weights(path: Path, seed: int, intermediate: int = INTERMEDIATE) -> None:
    import numpy as np
    from safetensors import TensorSpec, serialize_file

    rng = np.random.Generator(np.random.PCG64(seed))
    # Sorted names: the draw order, hence every byte, must not depend on dict construction.
    arrays: dict[str, np.ndarray] = {}
    for key, shape in sorted(_shapes(intermediate).items()):
        if key.endswith("norm.weight"):
            values = np.ones(shape, dtype=np.float32)
        else:
            values = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
        arrays[key] = np.ascontiguousarray(_to_bf16_bits(values))
    # numpy has no bfloat16, so safetensors.numpy would tag these U16; TensorSpec lets us name
    # the dtype BF16 while handing over the raw bits. `arrays` keeps the buffers alive meanwhile.
    specs = {
        key: TensorSpec(dtype="bfloat16", shape=a.shape, data_ptr=a.ctypes.data, data_len=a.nbytes)
        for key, a in arrays.items()
    }
    serialize_file(specs, path, metadata={"format": "pt"})


def _corpus() -> Iterator[str]:
    """Deterministic pseudo-text: a made-up lexicon with a skewed word frequency, and code."""
    rng = random.Random(_CORPUS_SEED)
    syllables = [o + v + c for o in _ONSETS for v in _VOWELS for c in _CODAS]
    lexicon = sorted(
        {"".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(6000)}
    )
    rng.shuffle(lexicon)

    def word() -> str:
        if rng.random() < 0.3:
            return rng.choice(_COMMON)
        return lexicon[int(len(lexicon) * rng.random() ** 2)]  # favour the front: Zipf-like

    for _ in range(_CORPUS_LINES):
        if rng.random() < 0.15:
            yield rng.choice(_CODE).format(w=word(), v=word(), n=rng.randint(0, 999))
            continue
        words = [word() for _ in range(rng.randint(4, 18))]
        words[0] = words[0].capitalize()
        yield " ".join(words) + rng.choice((".", ".", ".", "?", "!", ",")) + "\n"


def _write_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    # Byte-level: any input text encodes without an unknown token.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    # The model's vocab is VOCAB: a smaller tokenizer would leave sampled ids undecodable.
    if tokenizer.get_vocab_size() != VOCAB:
        raise RuntimeError(f"tokenizer has {tokenizer.get_vocab_size()} tokens, not {VOCAB}")
    tokenizer.save(str(out / "tokenizer.json"))
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS,
            "eos_token": IM_END,
            "pad_token": EOS,
            "model_max_length": MAX_POSITIONS,
            "clean_up_tokenization_spaces": False,
            "chat_template": CHAT_TEMPLATE,
        },
    )
