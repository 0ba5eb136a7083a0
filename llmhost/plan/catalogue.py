"""Model metadata for the planner: what vLLM reads from ``config.json`` plus the weights' size.

Three sources, tried by ``resolve`` in this order: the committed catalogue
(``llmhost/plan/catalogue/*.json``, so planning works offline and in CI), the Hugging Face hub
(``source: hub`` models not in the catalogue), and a model directory on the controller
(``source: local``). Nothing here touches a host; ``huggingface_hub`` is imported only when the
hub is asked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmhost.settings import ModelSource, ModelSpec

CATALOGUE_DIR = Path(__file__).with_name("catalogue")

# The keys vLLM tries, in order, for a model's maximum length (it takes the smallest present).
_MAX_LEN_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)
# RoPE types whose factor vLLM does not multiply into the maximum length.
_ROPE_TYPES_WITHOUT_FACTOR = ("su", "longrope", "llama3")


class ModelMetaError(ValueError):
    """Model metadata that cannot be found or read; the message names the file or repo."""


@dataclass(frozen=True)
class ModelMeta:
    """The numbers of one model checkpoint that decide its memory use under vLLM."""

    architecture: str
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    dtype: str
    quantization: str | None
    max_position_embeddings: int
    # What vLLM accepts as --max-model-len: max positions times a RoPE scaling factor.
    max_model_len_limit: int
    rope_scaling: str | None
    # Tokens of KV a sequence keeps per layer when every layer uses a sliding window.
    sliding_window: int | None
    weights_bytes: int
    # A quantized checkpoint's group size (AWQ: 128): tensor parallel must split whole groups.
    quant_group_size: int | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], weights_bytes: int) -> ModelMeta:
        """Read a parsed ``config.json`` the way vLLM does; ``weights_bytes`` from the files."""
        try:
            hidden = int(config["hidden_size"])
            heads = int(config["num_attention_heads"])
            layers = int(config["num_hidden_layers"])
        except KeyError as e:
            raise ModelMetaError(f"config.json has no {e.args[0]!r}") from None
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or hidden // heads)
        max_pos, limit, rope = _max_lengths(config)
        window = config.get("sliding_window")
        if not config.get("use_sliding_window", True):
            # Qwen2 ships a window size but switches it off.
            window = None
        quant = config.get("quantization_config") or {}
        architectures = config.get("architectures") or [config.get("model_type", "unknown")]
        return cls(
            architecture=str(architectures[0]),
            num_layers=layers,
            num_attention_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            hidden_size=hidden,
            intermediate_size=int(config.get("intermediate_size") or 4 * hidden),
            vocab_size=int(config.get("vocab_size") or 0),
            dtype=str(config.get("torch_dtype") or config.get("dtype") or "float16"),
            quantization=quant.get("quant_method"),
            max_position_embeddings=max_pos,
            max_model_len_limit=limit,
            rope_scaling=rope,
            sliding_window=int(window) if window else None,
            weights_bytes=int(weights_bytes),
            # GPTQ writes -1 for "no groups".
            quant_group_size=max(int(quant.get("group_size") or 0), 0) or None,
        )


def _max_lengths(config: Mapping[str, Any]) -> tuple[int, int, str | None]:
    """(max positions, the limit vLLM derives from them, a label of the RoPE scaling).

    Mirrors vLLM's ``_get_and_verify_max_len``: linear/dynamic/yarn scaling multiply the limit
    by ``factor`` (yarn starting from ``original_max_position_embeddings``), so
    deepseek-coder-33b (16384 positions, linear x4) is accepted up to 65536 tokens.
    """
    present = [int(config[k]) for k in _MAX_LEN_KEYS if config.get(k)]
    if not present:
        raise ModelMetaError(f"config.json has none of {', '.join(_MAX_LEN_KEYS)}")
    max_pos = min(present)
    limit = float(max_pos)
    rope = config.get("rope_scaling")
    if not rope:
        return max_pos, max_pos, None
    kind = str(rope.get("rope_type") or rope.get("type") or "default")
    factor = float(rope.get("factor") or 1.0)
    if kind not in _ROPE_TYPES_WITHOUT_FACTOR:
        if kind == "yarn":
            limit = float(rope["original_max_position_embeddings"])
        limit *= factor
    return max_pos, int(limit), f"{kind} x{factor:g}"


def _entries() -> Iterator[dict[str, Any]]:
    for path in sorted(CATALOGUE_DIR.glob("*.json")):
        yield json.loads(path.read_text(encoding="utf-8"))


def catalogue_entry(repo: str, revision: str) -> dict[str, Any] | None:
    """The catalogue's record of ``repo`` at ``revision``, or None."""
    for entry in _entries():
        if entry["repo"] == repo and entry["revision"] == revision:
            return entry
    return None


def from_catalogue(repo: str, revision: str) -> ModelMeta:
    entry = catalogue_entry(repo, revision)
    if entry is None:
        raise ModelMetaError(f"{repo}@{revision}: not in the catalogue ({CATALOGUE_DIR})")
    return _from_entry(entry)


def _from_entry(entry: Mapping[str, Any]) -> ModelMeta:
    return ModelMeta.from_config(entry["config"], entry["weights_bytes"])


def from_local_dir(path: str | Path) -> ModelMeta:
    """Read ``config.json`` and the safetensors' size from a model directory."""
    root = Path(path)
    config_file = root / "config.json"
    if not config_file.is_file():
        raise ModelMetaError(f"{config_file}: missing; a model directory needs its config.json")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelMetaError(f"{config_file}: not valid JSON ({e})") from None
    return ModelMeta.from_config(config, _local_weights_bytes(root))


def _local_weights_bytes(root: Path) -> int:
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            return int(json.loads(index.read_text(encoding="utf-8"))["metadata"]["total_size"])
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            raise ModelMetaError(f"{index}: no metadata.total_size") from None
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise ModelMetaError(f"{root}: no *.safetensors files (vLLM serves safetensors weights)")
    return sum(f.stat().st_size for f in files)


def from_hub(
    repo: str, revision: str, token: str | None = None, endpoint: str | None = None
) -> ModelMeta:
    """Fetch ``config.json`` and the safetensors' sizes of ``repo`` at ``revision`` from the
    hub at ``endpoint`` (None: the public hub)."""
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi(endpoint=endpoint, token=token)
    info = api.model_info(repo, revision=revision, files_metadata=True)
    weights = [s.rfilename for s in info.siblings or [] if s.rfilename.endswith(".safetensors")]
    if not weights:
        raise ModelMetaError(f"{repo}@{revision}: no *.safetensors files (vLLM serves those)")
    # Sizes from the paths' own info: a mirror may list the files without them (Olah's local
    # mirror does), and a weight of 0 would plan the cache over the weights.
    sizes = {
        p.path: getattr(p, "size", None)
        for p in api.get_paths_info(repo, weights, revision=revision)
    }
    missing = sorted(name for name in weights if not sizes.get(name))
    if missing:
        raise ModelMetaError(
            f"{repo}@{revision}: the hub did not say how large {', '.join(missing)} is; "
            "plan with a catalogued model or a source 'local' copy"
        )
    config_path = hf_hub_download(
        repo, "config.json", revision=revision, token=token, endpoint=endpoint
    )
    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    return ModelMeta.from_config(config, sum(sizes[name] or 0 for name in weights))


def resolve(model: ModelSpec, token: str | None = None, endpoint: str | None = None) -> ModelMeta:
    """Metadata for one service's model: catalogue, then the hub at ``endpoint``; or the local
    directory."""
    if model.source is ModelSource.LOCAL:
        assert model.path
        return from_local_dir(model.path)
    assert model.repo and model.revision
    entry = catalogue_entry(model.repo, model.revision)
    if entry is not None:
        return _from_entry(entry)
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return from_hub(model.repo, model.revision, token, endpoint)
    except ModelMetaError:
        raise
    except HfHubHTTPError as e:
        # The hub answered: wrong repo, wrong revision, or a gated repo without a token.
        raise ModelMetaError(f"{model.repo}@{model.revision}: the hub refused: {e}") from None
    except Exception as e:
        # Transport errors come from whichever HTTP client huggingface_hub is built on
        # (requests, httpx) and share no base class with OSError.
        from huggingface_hub import constants

        raise ModelMetaError(
            f"{model.repo}@{model.revision}: not in the catalogue and the hub at "
            f"{endpoint or constants.ENDPOINT} is unreachable: {e}; plan with a catalogued model "
            "(llmhost/plan/catalogue/) or a source 'local' copy, or fix llmhost_hf_endpoint"
        ) from None
