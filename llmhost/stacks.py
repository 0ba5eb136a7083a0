"""The seed's three configurations as named stacks: two services each, in ServiceSpec's shape.

Sized for one 80-96 GB card (they fit at 80 GB with the default 0.90 cap; the planner shares
the rest out as extra KV). Select one with ``llmhost_stack``; change single knobs with
``llmhost_service_overrides``. Each revision is the catalogue's (``llmhost/plan/catalogue/``, where
``revision_source`` says where the sha was read).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

DEEPSEEK_CODER_33B = {
    "source": "hub",
    "repo": "TheBloke/deepseek-coder-33B-instruct-AWQ",
    "revision": "c40b499bac2712cd3c445cf1b05d2c6558ab0d29",
}
# The seed named TheBloke/Mistral-7B-v0.1-AWQ, which is the BASE model (no chat tuning, sliding
# window 4096); the general service needs the instruction-tuned v0.2.
MISTRAL_7B_INSTRUCT = {
    "source": "hub",
    "repo": "TheBloke/Mistral-7B-Instruct-v0.2-AWQ",
    "revision": "f970a2bb89d5c2f9d217dc337f39e24625d6462a",
}
QWEN_CODER_32B = {
    "source": "hub",
    "repo": "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ",
    "revision": "1ed0a6145da0ce550c628e8e8b678f51e695995d",
}
QWEN_14B = {
    "source": "hub",
    "repo": "Qwen/Qwen2.5-14B-Instruct-AWQ",
    "revision": "539535859b135b0244c91f3e59816150c8056698",
}
QWEN_7B = {
    "source": "hub",
    "repo": "Qwen/Qwen2.5-7B-Instruct-AWQ",
    "revision": "b25037543e9394b818fdfca67ab2a00ecc7dd641",
}

# `llmhost bench` for the coder's role, an IDE assistant: a file's worth of context in, a
# function out; its first token soon (the developer waits), then faster than a chat's.
IDE_ASSISTANT = {
    "slo": {"ttft_ms": 1500, "itl_ms": 50},
    "workload": {"prompt_tokens": 2048, "output_tokens": 256, "concurrency": 4},
}


def _service(
    name: str, port: int, served: str, model: Mapping[str, Any], max_model_len: int, **knobs: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "port": port,
        "served_model_name": served,
        "model": dict(model),
        "max_model_len": max_model_len,
        # Set explicitly: vLLM's defaults on cards >= 70 GiB (1024 seqs, 8192 tokens) are for a
        # GPU of its own.
        "max_num_seqs": 32,
        "max_num_batched_tokens": 8192,
        "kv_cache_dtype": "auto",
        **knobs,
    }


STACKS: Mapping[str, list[dict[str, Any]]] = {
    # deepseek-coder-33b was trained to 16384 positions (vLLM would accept 65536 via its rope x4).
    "primary": [
        _service(
            "coder",
            8001,
            "deepseek-coder-33b-instruct",
            DEEPSEEK_CODER_33B,
            16384,
            concurrency=4,
            **IDE_ASSISTANT,
        ),
        _service(
            "general", 8002, "mistral-7b-instruct-v0.2", MISTRAL_7B_INSTRUCT, 32768, concurrency=4
        ),
    ],
    "single-vendor": [
        _service(
            "coder",
            8001,
            "qwen2.5-coder-32b-instruct",
            QWEN_CODER_32B,
            32768,
            concurrency=2,
            **IDE_ASSISTANT,
        ),
        _service("general", 8002, "qwen2.5-7b-instruct", QWEN_7B, 32768, concurrency=4),
    ],
    "max-quality": [
        _service(
            "coder",
            8001,
            "deepseek-coder-33b-instruct",
            DEEPSEEK_CODER_33B,
            16384,
            concurrency=4,
            **IDE_ASSISTANT,
        ),
        _service("general", 8002, "qwen2.5-14b-instruct", QWEN_14B, 32768, concurrency=2),
    ],
}


def stack_services(name: str | None) -> list[dict[str, Any]]:
    """Deep copies of the named stack's service dicts; ``KeyError`` names the known stacks."""
    if name not in STACKS:
        known = ", ".join(repr(n) for n in STACKS)
        raise KeyError(f"unknown stack {name!r}; choose one of {known} or set llmhost_services")
    return copy.deepcopy(STACKS[name])
