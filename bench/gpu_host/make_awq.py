"""Write a random-weight AWQ checkpoint (GEMM, 4 bit, group 128) with a catalogue model's shapes.

    python make_awq.py CATALOGUE_JSON TOKENIZER_DIR OUT_DIR [--sparse]

The config is the catalogue entry's (``llmhost/catalogue/*.json``: the real model's fields vLLM
reads), so the checkpoint has the real model's layers, heads and tensor shapes: qweight int32
[in, out/8], qzeros int32 [in/128, out/8], scales fp16 [in/128, out], fp16 embeddings, lm_head
and norms. Values are random, made on the GPU (memory tests only: the text is garbage).
``--sparse`` writes the same files with holes instead of values (no torch, no GPU, no disk):
for checking the planner against the real sizes on a machine without a GPU.
The tokenizer is a small one made offline (the lab's), copied in with its chat template.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

GROUP = 128
SHARD_BYTES = 5 * 2**30  # about the size of TheBloke's shards (9.96 GB, 8.05 GB): a few files
DTYPES = {"I32": 4, "F16": 2}


def tensors(cfg: dict[str, Any]) -> Iterator[tuple[str, str, tuple[int, ...]]]:
    """(name, safetensors dtype, shape) of every tensor of a Llama/Mistral AWQ checkpoint."""
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    heads, kv, vocab = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]
    d = cfg.get("head_dim") or h // heads
    yield "model.embed_tokens.weight", "F16", (vocab, h)
    proj = {
        "self_attn.q_proj": (h, heads * d),
        "self_attn.k_proj": (h, kv * d),
        "self_attn.v_proj": (h, kv * d),
        "self_attn.o_proj": (heads * d, h),
        "mlp.gate_proj": (h, inter),
        "mlp.up_proj": (h, inter),
        "mlp.down_proj": (inter, h),
    }
    for n in range(layers):
        p = f"model.layers.{n}."
        for name, (i, o) in proj.items():
            yield p + name + ".qweight", "I32", (i, o // 8)
            yield p + name + ".qzeros", "I32", (i // GROUP, o // 8)
            yield p + name + ".scales", "F16", (i // GROUP, o)
        yield p + "input_layernorm.weight", "F16", (h,)
        yield p + "post_attention_layernorm.weight", "F16", (h,)
    yield "model.norm.weight", "F16", (h,)
    yield "lm_head.weight", "F16", (vocab, h)


def nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    n = DTYPES[dtype]
    for s in shape:
        n *= s
    return n


def shards(cfg: dict[str, Any]) -> list[list[tuple[str, str, tuple[int, ...]]]]:
    out: list[list[tuple[str, str, tuple[int, ...]]]] = [[]]
    size = 0
    for t in tensors(cfg):
        if size > SHARD_BYTES:
            out.append([])
            size = 0
        out[-1].append(t)
        size += nbytes(t[1], t[2])
    return out


# How many ids the tokenizer has, and its special ones (main reads them): the models'
# vocabularies are larger.
TOKENIZER_IDS = 0
SPECIAL_IDS: list[int] = []


def random_bytes(name: str, dtype: str, shape: tuple[int, ...]) -> bytes:
    import torch  # only on the GPU machine

    if dtype == "I32":
        t = torch.randint(-(2**31), 2**31 - 1, shape, dtype=torch.int32, device="cuda")
    elif name.endswith("scales"):
        # Small scales keep activations finite through 60 layers of random weights.
        t = (torch.rand(shape, device="cuda") * 0.002).half()
    elif "norm" in name:
        t = torch.ones(shape, device="cuda", dtype=torch.float16)
    else:
        t = (torch.randn(shape, device="cuda") * 0.02).half()
        if name == "lm_head.weight":
            # Only the tiny tokenizer's ordinary ids can win: with every row random, greedy
            # decoding settled on an id the tokenizer lacks and the coder answered ""
            # (device_run.txt); an end-of-turn id first would answer "" too.
            t[TOKENIZER_IDS:] = 0
            t[SPECIAL_IDS] = 0
    return t.cpu().numpy().tobytes()


def write_shard(path: Path, items: list[tuple[str, str, tuple[int, ...]]], sparse: bool) -> int:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in items:
        size = nbytes(dtype, shape)
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        _data(f, items, sparse)
    return offset


def _data(f: BinaryIO, items: list[tuple[str, str, tuple[int, ...]]], sparse: bool) -> None:
    for name, dtype, shape in items:
        if sparse:
            f.seek(nbytes(dtype, shape), 1)
        else:
            f.write(random_bytes(name, dtype, shape))
    f.truncate()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("catalogue", type=Path)
    ap.add_argument("tokenizer", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--sparse", action="store_true")
    args = ap.parse_args()
    entry = json.loads(args.catalogue.read_text())
    global TOKENIZER_IDS, SPECIAL_IDS
    tokenizer = json.loads((args.tokenizer / "tokenizer.json").read_text())
    SPECIAL_IDS = [t["id"] for t in tokenizer["added_tokens"]]
    TOKENIZER_IDS = max([*tokenizer["model"]["vocab"].values(), *SPECIAL_IDS]) + 1
    cfg = dict(entry["config"])
    args.out.mkdir(parents=True, exist_ok=True)
    parts = shards(cfg)
    weight_map: dict[str, str] = {}
    total = 0
    for i, items in enumerate(parts, 1):
        fn = f"model-{i:05d}-of-{len(parts):05d}.safetensors"
        total += write_shard(args.out / fn, items, args.sparse)
        weight_map.update({name: fn for name, _, _ in items})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (args.out / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    # The tiny tokenizer's ids: bos 0, eos 1, <|im_end|> 3 (llmhost_lab/tinymodel.py).
    cfg.update(torch_dtype="float16", bos_token_id=0, eos_token_id=1, hidden_act="silu",
               rms_norm_eps=1e-5 if cfg["model_type"] == "mistral" else 1e-6)  # fmt: skip
    (args.out / "config.json").write_text(json.dumps(cfg, indent=1))
    gen = {"bos_token_id": 0, "eos_token_id": [1, 3]}
    (args.out / "generation_config.json").write_text(json.dumps(gen))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(args.tokenizer / name, args.out / name)
    print(f"{args.out}: {total} tensor bytes (catalogue {entry['weights_bytes']}), "
          f"{len(parts)} shards")  # fmt: skip


if __name__ == "__main__":
    main()
