"""VRAM planner: each service's ``--gpu-memory-utilization`` derived from its model and wishes.

Pure: numbers and model metadata in, a ``HostPlan`` out (no pyinfra, no I/O), so the CLI, the
deploy and the host tests share one answer to "does it fit, with how much headroom?".

The rule, per GPU:

* budget = min(cap x CUDA's total, CUDA's total - headroom - each process's memory beyond its
  fraction); the fractions together stay within it.
* each service needs: its terms inside the fraction (weights as loaded, activation peak, growth
  outside PyTorch, and in the pinned vLLM the CUDA-graph estimate) + KV for ``concurrency``
  sequences of ``max_model_len`` tokens. If the sum exceeds the budget the plan is refused
  with a ``PlanError`` that names the service, the numbers and the knobs.
* spare memory is shared out in proportion to each service's KV need (a service that asked
  for twice the KV gets twice the extra), so both gain the same relative concurrency; a
  service that sets ``gpu_memory_utilization`` itself keeps it and is told what it holds.
* fractions are rounded down to 3 decimals, after reserving one 0.001 step per service so the
  rounding never eats into what a service asked for; their sum never exceeds the cap.

vLLM requests ceil(CUDA's total x fraction) and gives its KV cache what its profiler does not
charge to anything else (the terms below, each with its source), so the KV tokens reported here
are what it should log as "GPU KV cache size: N tokens"; each term errs a little high, so vLLM
finds slightly more (-0.6 % / -0.5 % on the H200 with 0.25.0), never less.
On CPU hosts (vLLM's CPU build) there is no fraction: the KV space is an integer number of GiB
(``VLLM_CPU_KVCACHE_SPACE``) per service.

On a host with several GPUs each service goes (largest first) where it fits: alone on the
smallest free GPU that holds it (spread before packing), else beside other services on the GPU
with the most room (the rule above, per GPU), else split with tensor parallel over the fewest
free GPUs that hold it (``--tensor-parallel-size``); a service's ``gpus`` pins it. A service
split over several GPUs shares none of them. With one GPU every service is on it, as above.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any, Literal

from llmhost.plan.catalogue import ModelMeta

if TYPE_CHECKING:
    from llmhost.settings import Settings

GiB = 1 << 30
MiB = 1 << 20
KiB = 1 << 10
DEFAULT_CAP = 0.90
FRACTION_DECIMALS = 3
# vLLM's default --block-size on CUDA: KV is allocated in blocks of this many tokens.
GPU_BLOCK_SIZE = 16
# vLLM's CPU backend block size, used to predict its "CPU KV cache size: N tokens" log line.
CPU_BLOCK_SIZE = 128
# Bytes per KV element: "auto" is the model's 16-bit dtype (vLLM serves float32 checkpoints in
# 16 bits too), fp8 halves it.
KV_ELEMENT_BYTES = {"auto": 2, "fp8": 1}

# What vLLM charges at start, term by term, modelled on its profiler (the worker's
# ``determine_available_memory`` and ``vllm.utils.mem_utils.memory_profiling``):
#   requested = ceil(total_cuda x fraction), total_cuda being CUDA's total (nvidia-smi's total
#     less the driver's reservation)
#   KV = requested - (weights as loaded + activation peak + non-torch growth) - graph estimate
# where the graph estimate is charged inside the fraction by 0.33 (VLLM_MEMORY_PROFILER_
# ESTIMATE_CUDAGRAPHS defaults on) and is 0 in 0.25 (its V2 runner's estimate returns 0, the
# graphs then come on top). The CUDA context predates vLLM's first memory snapshot: it is
# outside the fraction in both. Measured with 0.25.0 on the H200 (FACTS.md).

WEIGHTS_LOADED_FACTOR = 1.04
"""Weights as loaded ("Model loading took") over their tensor bytes: 18.49 / 18.00 GiB (1.027)
and 5.38 / 5.19 GiB (1.037) for the 32B and 7B AWQ shapes on the H200 (vLLM 0.25.0)."""

ACTIVATION_MARGIN = 1.05
"""On ``activation_bytes``: the formula alone matched vLLM's "activation peak" within 0.02 GiB
(1.61 and 1.13 GiB measured, 32B and 7B shapes, 8192 batched tokens, vLLM 0.25.0)."""

NON_TORCH_BYTES = 300 * MiB
"""Growth of memory outside PyTorch's allocator while the instance starts and profiles, inside
the fraction: 0.22 GiB measured for both shapes (vLLM 0.25.0, one GPU)."""

CUDA_CONTEXT_BYTES = 600 * MiB
"""Each process's CUDA context, outside its fraction: 0.51 GiB measured (H200, driver
580.159.04, PyTorch 2.11+cu130)."""

CUDA_GRAPH_BYTES_PER_LAYER_SEQ = 160 * KiB
"""CUDA-graph memory per decoder layer and per ``max_num_seqs`` (the capture sizes grow with
it), unless ``enforce_eager``: 0.20 / 0.37 GiB for 64 layers at 32 / 64 sequences and 0.10 /
0.18 GiB for 28 layers, at most 103 KiB per layer and sequence (vLLM 0.25.0, H200), x 1.5 for
the estimate's reported over-count (#45178, #53013)."""

DRIVER_RESERVED_BYTES = 640 * MiB
"""nvidia-smi's total minus CUDA's, when the host's own figure is not known (``llmhost plan``):
615 MiB on an H200, 556 MiB on an H100 80GB."""

NCCL_BYTES = 512 * MiB
"""Each rank's NCCL and custom all-reduce buffers under tensor parallel, outside its fraction:
vLLM's ``Worker.init_device`` (vllm/v1/worker/gpu_worker.py) initialises the distributed
environment before its memory snapshot, "so NCCL buffers are allocated before we measure
available memory". Not measured here (no multi-GPU machine): a few hundred MiB is NCCL's usual
share on one host."""

TENSOR_PARALLEL_SIZES = (1, 2, 4, 8)
"""The splits the planner uses: powers of two, at most one host's eight GPUs."""

MODELLED_VERSIONS = ("0.33", "0.25")
"""The vLLM releases whose accounting this planner models: the pin, and the one it was checked
against on a real GPU. 0.25 charges no graph estimate inside the fraction."""


def graphs_inside_fraction(vllm_version: str) -> bool:
    """Whether ``vllm_version`` takes its CUDA-graph estimate from the KV budget."""
    return not vllm_version.startswith("0.25.")


class PlanError(ValueError):
    """A plan that cannot work; the message names the service, the numbers and the knob."""


def tensor_parallel_problem(meta: ModelMeta, tp: int) -> str | None:
    """Why vLLM cannot split ``meta`` over ``tp`` GPUs, or None.

    vLLM's ``QKVParallelLinear`` (vllm/model_executor/layers/linear.py) divides the attention
    heads by tp, and the KV heads by tp or tp by them (each rank then holds one replicated KV
    head); awq_marlin (``verify_marlin_supports_shape``) needs each rank's share of a
    row-parallel input (hidden size, intermediate size) in whole quantization groups.
    """
    if tp not in TENSOR_PARALLEL_SIZES:
        return f"{tp} GPUs: tensor parallel here is over 1, 2, 4 or 8 GPUs"
    heads, kv = meta.num_attention_heads, meta.num_kv_heads
    if heads % tp:
        return f"its {heads} attention heads do not divide by {tp}"
    if kv % tp and tp % kv:
        return f"its {kv} KV heads and {tp} GPUs do not divide one by the other"
    group = meta.quant_group_size
    for size in (meta.hidden_size, meta.intermediate_size):
        if group and (size % tp or size // tp % group):
            return f"{size} / {tp} is not a whole number of its {group}-wide quantization groups"
    return None


@dataclass(frozen=True)
class Gpu:
    """One GPU of the host: nvidia-smi's index, total and UUID, and what the driver keeps of
    it (the rest is CUDA's total, which the fractions multiply)."""

    index: int
    total_bytes: int
    reserved_bytes: int = DRIVER_RESERVED_BYTES
    uuid: str | None = None

    @property
    def card(self) -> int:
        return self.total_bytes - self.reserved_bytes

    @property
    def label(self) -> str:
        return f"GPU {self.index} ({self.total_bytes / GiB:.1f} GiB)"


@dataclass(frozen=True)
class GpuPlan:
    """What one GPU holds under the plan."""

    index: int
    uuid: str | None
    total_bytes: int
    budget_bytes: int
    fraction_sum: float
    # Under load, when every process on it has taken its activation peak back.
    free_bytes: int
    services: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "total_gib": _gib(self.total_bytes),
            "budget_gib": _gib(self.budget_bytes),
            "fraction_sum": self.fraction_sum,
            "free_gib": _gib(self.free_bytes),
            "services": list(self.services),
        }

    def line(self, cap: float) -> str:
        held = ", ".join(self.services) or "no service"
        return (
            f"GPU {self.index} ({self.total_bytes / GiB:.1f} GiB): {held}; fractions sum to "
            f"{self.fraction_sum:.3f} (cap {cap:.2f}); {self.free_bytes / GiB:.1f} GiB stays free"
        )


@dataclass(frozen=True)
class ServiceRequest:
    """One service's model and wishes, as the planner needs them."""

    name: str
    meta: ModelMeta
    max_model_len: int
    concurrency: int = 1
    kv_cache_dtype: str = "auto"
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 8192
    enforce_eager: bool = False
    # What the table shows in its model column (repo or path).
    label: str = ""
    # Set by the service itself: the planner reports what it gives instead of sizing it.
    gpu_memory_utilization: float | None = None
    # The GPUs (indices) the service is pinned to; None: the planner places it.
    gpus: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ServicePlan:
    name: str
    label: str
    # As loaded (GPU) or on disk (CPU).
    weights_bytes: int
    # Outside the fraction, per process.
    context_bytes: int
    activation_bytes: int
    cuda_graph_bytes: int
    kv_bytes: int
    kv_bytes_per_token: int
    kv_tokens: int
    max_model_len: int
    concurrency: int
    # Sequences of max_model_len tokens the KV cache holds at once (vLLM's "maximum concurrency").
    max_concurrency: float
    gpu_memory_utilization: float | None
    kv_cache_memory_bytes: int | None
    cpu_kv_cache_gib: int | None
    notes: tuple[str, ...] = ()
    non_torch_bytes: int = 0
    # Whether the vLLM version planned for charges the graph estimate inside the fraction.
    graphs_inside: bool = True
    # GPU hosts: the GPUs (indices) it runs on; with several, the memory terms are per GPU.
    gpus: tuple[int, ...] = ()
    tensor_parallel_size: int = 1
    # Tensor parallel: each rank's NCCL buffers, outside the fraction.
    nccl_bytes: int = 0

    @property
    def overhead_bytes(self) -> int:
        """What the fraction holds besides weights and KV."""
        graphs = self.cuda_graph_bytes if self.graphs_inside else 0
        return self.activation_bytes + self.non_torch_bytes + graphs

    @property
    def outside_bytes(self) -> int:
        """What the process holds beyond its fraction."""
        graphs = 0 if self.graphs_inside else self.cuda_graph_bytes
        return self.context_bytes + self.nccl_bytes + graphs

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.label,
            "weights_gib": _gib(self.weights_bytes),
            "overhead_gib": _gib(self.overhead_bytes),
            "overhead": {
                "activation_gib": _gib(self.activation_bytes),
                "non_torch_gib": _gib(self.non_torch_bytes),
                "cuda_graphs_gib": _gib(self.cuda_graph_bytes),
                "cuda_graphs_inside_fraction": self.graphs_inside,
            },
            "outside_fraction": {
                "cuda_context_gib": _gib(self.context_bytes),
                "nccl_gib": _gib(self.nccl_bytes),
            },
            "kv_gib": _gib(self.kv_bytes),
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_tokens": self.kv_tokens,
            "max_model_len": self.max_model_len,
            "concurrency": self.concurrency,
            "max_concurrency": self.max_concurrency,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "kv_cache_memory_bytes": self.kv_cache_memory_bytes,
            "cpu_kv_cache_gib": self.cpu_kv_cache_gib,
            "gpus": list(self.gpus),
            "tensor_parallel_size": self.tensor_parallel_size,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class HostPlan:
    mode: Literal["gpu", "cpu"]
    services: Mapping[str, ServicePlan]
    verdict: str
    # With several GPUs: their sums (per GPU in ``gpus``), and no single fraction sum.
    gpu_total_bytes: int | None = None
    cap: float | None = None
    budget_bytes: int | None = None
    fraction_sum: float | None = None
    # GPU memory no service reserves once both run (total - sum of fractions x total).
    free_bytes: int | None = None
    # GPU hosts: every GPU, by index, and what it holds.
    gpus: tuple[GpuPlan, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "gpu_total_gib": _gib(self.gpu_total_bytes),
            "cap": self.cap,
            "budget_gib": _gib(self.budget_bytes),
            "fraction_sum": self.fraction_sum,
            "free_gib": _gib(self.free_bytes),
            "verdict": self.verdict,
            "gpus": [gpu.to_dict() for gpu in self.gpus],
            "services": {name: svc.to_dict() for name, svc in self.services.items()},
        }

    def render_table(self) -> str:
        """One row per service, a total row, each GPU (when there are several), then the
        verdict and any notes."""
        gpu = self.mode == "gpu"
        several = len(self.gpus) > 1
        svcs = list(self.services.values())
        head = ["service", "model"] + (["GPUs"] if several else []) + ["weights GiB"]
        head += ["overhead GiB"] if gpu else []
        head += ["KV GiB", "KV tokens", "seqs x max_model_len"]
        head += ["fraction"] if gpu else ["KV space GiB"]
        rows = [_row(p, gpu, several) for p in svcs]
        total = ["total", ""] + ([""] if several else [])
        total += [f"{sum(p.weights_bytes for p in svcs) / GiB:.2f}"]
        total += [f"{sum(p.overhead_bytes for p in svcs) / GiB:.2f}"] if gpu else []
        total += [f"{sum(p.kv_bytes for p in svcs) / GiB:.2f}", "", ""]
        if not gpu:
            total.append(str(sum(p.cpu_kv_cache_gib or 0 for p in svcs)))
        else:
            total.append("" if self.fraction_sum is None else f"{self.fraction_sum:.3f}")
        rows.append(total)
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = [
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in [head, *rows]
        ]
        lines += [g.line(self.cap or DEFAULT_CAP) for g in self.gpus] if several else []
        lines.append(f"verdict: {self.verdict}")
        lines += [f"note: {p.name}: {note}" for p in svcs for note in p.notes]
        return "\n".join(lines)


def _row(p: ServicePlan, gpu: bool, several: bool) -> list[str]:
    """One service's row of ``HostPlan.render_table``."""
    row = [p.name, p.label] + ([",".join(map(str, p.gpus))] if several else [])
    row += [f"{p.weights_bytes / GiB:.2f}"]
    row += [f"{p.overhead_bytes / GiB:.2f}"] if gpu else []
    row += [f"{p.kv_bytes / GiB:.2f}", f"{p.kv_tokens:,}"]
    row += [f"{p.max_concurrency:.2f} x {p.max_model_len}"]
    row += [f"{p.gpu_memory_utilization:.3f}"] if gpu else [str(p.cpu_kv_cache_gib)]
    return row


def _gib(value: int | None) -> float | None:
    return None if value is None else round(value / GiB, 2)


def kv_bytes_per_token(meta: ModelMeta, kv_cache_dtype: str = "auto", tp: int = 1) -> int:
    """2 (K and V) x layers x kv heads x head dim x bytes per element; under tensor parallel,
    per GPU: vLLM's ``ModelConfig.get_num_kv_heads`` gives each rank max(1, kv heads // tp)
    (fewer heads than GPUs: each rank holds one, replicated)."""
    try:
        element = KV_ELEMENT_BYTES[kv_cache_dtype]
    except KeyError:
        raise PlanError(
            f"kv_cache_dtype {kv_cache_dtype!r}: use one of {sorted(KV_ELEMENT_BYTES)}"
        ) from None
    return 2 * meta.num_layers * max(1, meta.num_kv_heads // tp) * meta.head_dim * element


def tokens_per_sequence(meta: ModelMeta, max_model_len: int, block_size: int) -> int:
    """KV slots one full-length sequence holds: a sliding window caps it, blocks round it up."""
    return rounded_to_blocks(min(max_model_len, meta.sliding_window or max_model_len), block_size)


def rounded_to_blocks(tokens: int, block_size: int) -> int:
    """KV slots ``tokens`` take: whole blocks of ``block_size``."""
    return -(-tokens // block_size) * block_size


def activation_bytes(
    meta: ModelMeta, max_num_batched_tokens: int, max_num_seqs: int, tp: int = 1
) -> int:
    """Peak of vLLM's profiling forward pass over ``max_num_batched_tokens`` tokens, per GPU.

    Per token in 16-bit: the MLP's gate/up output and activation (3 x intermediate, split over
    the tensor-parallel ranks: column-parallel) and a few hidden-state copies (4 x hidden,
    whole on every rank after each all-reduce); plus float32 logits and probabilities for
    ``max_num_seqs`` rows in the sampler, whole on every rank (the logits processor gathers
    the vocabulary-parallel logits). Flash attention keeps no score matrix.
    """
    per_token = 2 * (3 * meta.intermediate_size // tp + 4 * meta.hidden_size)
    sampler = 2 * 4 * max_num_seqs * meta.vocab_size
    return math.ceil((max_num_batched_tokens * per_token + sampler) * ACTIVATION_MARGIN)


def cuda_graph_bytes(meta: ModelMeta, enforce_eager: bool, max_num_seqs: int = 64) -> int:
    if enforce_eager:
        return 0
    return meta.num_layers * max_num_seqs * CUDA_GRAPH_BYTES_PER_LAYER_SEQ


def _check(req: ServiceRequest) -> None:
    meta = req.meta
    if req.max_model_len > meta.max_model_len_limit:
        how = (
            f"max_position_embeddings {meta.max_position_embeddings}, rope {meta.rope_scaling}"
            if meta.rope_scaling
            else "its max_position_embeddings"
        )
        raise PlanError(
            f"{req.name}: max_model_len {req.max_model_len} is above the "
            f"{meta.max_model_len_limit} tokens vLLM accepts for this model ({how}); "
            f"lower max_model_len to {meta.max_model_len_limit}"
        )
    if req.concurrency > req.max_num_seqs:
        raise PlanError(
            f"{req.name}: concurrency {req.concurrency} needs that many sequences at once but "
            f"max_num_seqs is {req.max_num_seqs}; raise max_num_seqs to {req.concurrency} "
            f"or lower concurrency to {req.max_num_seqs}"
        )


def _notes(req: ServiceRequest) -> tuple[str, ...]:
    meta = req.meta
    if req.max_model_len > meta.max_position_embeddings:
        return (
            f"max_model_len {req.max_model_len} is past the model's "
            f"{meta.max_position_embeddings} positions; vLLM allows it ({meta.rope_scaling}) "
            "but the model was not trained that long",
        )
    return ()


def _knobs(req: ServiceRequest, bpt: int, block: int, available: int) -> list[str]:
    """The changes to this service alone that would make its KV need fit in ``available``."""
    options = []
    per_seq = tokens_per_sequence(req.meta, req.max_model_len, block)
    fit_len = available // (req.concurrency * bpt)
    fit_len = fit_len // 1024 * 1024 if fit_len >= 1024 else fit_len // block * block
    if block <= fit_len < req.max_model_len:
        options.append(f"lower max_model_len to {fit_len}")
    fit_conc = available // (per_seq * bpt)
    if 1 <= fit_conc < req.concurrency:
        options.append(f"lower concurrency to {fit_conc}")
    fp8_need = req.concurrency * per_seq * kv_bytes_per_token(req.meta, "fp8")
    if req.kv_cache_dtype == "auto" and fp8_need <= available:
        options.append("use kv_cache_dtype=fp8")
    return options


def _either(options: Sequence[str]) -> str:
    return options[0] if len(options) == 1 else f"{', '.join(options[:-1])}, or {options[-1]}"


@dataclass(frozen=True)
class _Terms:
    """One service's memory terms as the planned vLLM version charges them."""

    kv_bytes_per_token: int
    weights: int
    activation: int
    non_torch: int
    cuda_graphs: int
    graphs_inside: bool
    # Tensor parallel: the terms are each rank's.
    tp: int
    nccl: int
    # What its fraction holds besides KV, and what the process holds beyond its fraction.
    inside: int
    outside: int
    # The KV its wishes need (concurrency x max_model_len tokens).
    kv_need: int


def _terms(req: ServiceRequest, graphs_inside: bool, tp: int = 1) -> _Terms:
    """The terms on each of ``tp`` GPUs: the weights split over them (vLLM shards every
    linear layer and the vocabulary; the norms it keeps whole are a rounding error), each rank
    profiles its own share, and vLLM sizes every rank's KV cache to the smallest rank's
    (``get_kv_cache_configs``, vllm/v1/core/kv_cache_utils.py: "the smallest among all ranks")."""
    bpt = kv_bytes_per_token(req.meta, req.kv_cache_dtype, tp)
    weights = math.ceil(req.meta.weights_bytes * WEIGHTS_LOADED_FACTOR / tp)
    activation = activation_bytes(req.meta, req.max_num_batched_tokens, req.max_num_seqs, tp)
    # Each rank captures graphs of the whole layer stack for every batch size.
    graphs = cuda_graph_bytes(req.meta, req.enforce_eager, req.max_num_seqs)
    per_seq = tokens_per_sequence(req.meta, req.max_model_len, GPU_BLOCK_SIZE)
    nccl = NCCL_BYTES if tp > 1 else 0
    return _Terms(
        kv_bytes_per_token=bpt,
        weights=weights,
        activation=activation,
        non_torch=NON_TORCH_BYTES,
        cuda_graphs=graphs,
        graphs_inside=graphs_inside,
        tp=tp,
        nccl=nccl,
        inside=weights + activation + NON_TORCH_BYTES + (graphs if graphs_inside else 0),
        outside=CUDA_CONTEXT_BYTES + nccl + (0 if graphs_inside else graphs),
        kv_need=req.concurrency * per_seq * bpt,
    )


def _milli(t: _Terms, kv: int, card: int, step: int) -> int:
    """The fraction, in 0.001 of the card, that holds ``t``'s terms and ``kv``, rounded up by
    ``step`` (one 0.001) so that truncation never takes from the KV."""
    return (t.inside + kv + step) * 10**FRACTION_DECIMALS // card


def _requested(milli: int, card: int) -> int:
    """vLLM's requested memory for a fraction: ceil(CUDA's total x fraction)."""
    return -(-card * milli // 10**FRACTION_DECIMALS)


def _gpu_service_plan(
    req: ServiceRequest, t: _Terms, milli: int, card: int, gpus: tuple[int, ...]
) -> ServicePlan:
    """What ``milli`` thousandths of the card (CUDA's total; with tensor parallel, the
    smallest of its GPUs') hold for the service on ``gpus``."""
    kv_bytes = _requested(milli, card) - t.inside
    kv_tokens = kv_bytes // (GPU_BLOCK_SIZE * t.kv_bytes_per_token) * GPU_BLOCK_SIZE
    per_seq = tokens_per_sequence(req.meta, req.max_model_len, GPU_BLOCK_SIZE)
    return ServicePlan(
        name=req.name,
        label=req.label,
        weights_bytes=t.weights,
        context_bytes=CUDA_CONTEXT_BYTES,
        activation_bytes=t.activation,
        cuda_graph_bytes=t.cuda_graphs,
        non_torch_bytes=t.non_torch,
        graphs_inside=t.graphs_inside,
        kv_bytes=kv_bytes,
        kv_bytes_per_token=t.kv_bytes_per_token,
        kv_tokens=kv_tokens,
        max_model_len=req.max_model_len,
        concurrency=req.concurrency,
        max_concurrency=round(kv_tokens / per_seq, 2),
        gpu_memory_utilization=milli / 10**FRACTION_DECIMALS,
        kv_cache_memory_bytes=kv_bytes,
        cpu_kv_cache_gib=None,
        notes=_notes(req) + _short_of_wish(req, kv_tokens / per_seq) + _split(gpus),
        gpus=gpus,
        tensor_parallel_size=t.tp,
        nccl_bytes=t.nccl,
    )


def _split(gpus: tuple[int, ...]) -> tuple[str, ...]:
    if len(gpus) < 2:
        return ()
    return (
        f"tensor parallel over GPUs {', '.join(map(str, gpus))}: its weights, overhead and KV "
        "GiB are each GPU's, its fraction is of each GPU",
    )


def _short_of_wish(req: ServiceRequest, holds: float) -> tuple[str, ...]:
    if req.gpu_memory_utilization is None or holds >= req.concurrency:
        return ()
    return (
        f"its gpu_memory_utilization {req.gpu_memory_utilization} holds {holds:.2f} sequences of "
        f"{req.max_model_len} tokens, fewer than concurrency {req.concurrency}",
    )


def _fixed_fraction(req: ServiceRequest, t: _Terms, card: int, step: int) -> int:
    """A service's own fraction in thousandths, or ``PlanError`` if it cannot hold one
    sequence of ``max_model_len`` (vLLM refuses to start then)."""
    assert req.gpu_memory_utilization is not None
    milli = round(req.gpu_memory_utilization * 10**FRACTION_DECIMALS)
    kv = _requested(milli, card) - t.inside
    one = tokens_per_sequence(req.meta, req.max_model_len, GPU_BLOCK_SIZE) * t.kv_bytes_per_token
    if kv < one:
        least = _milli(t, one, card, step) / 10**FRACTION_DECIMALS
        raise PlanError(
            f"{req.name}: gpu_memory_utilization {req.gpu_memory_utilization} is "
            f"{_requested(milli, card) / GiB:.1f} GiB of this GPU's {card / GiB:.1f} GiB; "
            f"weights and overheads take {t.inside / GiB:.1f} GiB and leave "
            f"{max(kv, 0) / GiB:.2f} GiB of KV, less than one {req.max_model_len}-token sequence "
            f"needs ({one / GiB:.2f} GiB); raise it to {least:.3f}, lower max_model_len, or unset "
            "it to have it planned"
        )
    return milli


def plan_gpu(
    requests: Sequence[ServiceRequest],
    gpu_total_bytes: int,
    cap: float = DEFAULT_CAP,
    headroom_bytes: int = 0,
    reserved_bytes: int = DRIVER_RESERVED_BYTES,
    graphs_inside: bool = True,
) -> HostPlan:
    """Fractions of one GPU for co-located services, or ``PlanError``.

    ``gpu_total_bytes`` is nvidia-smi's total, ``reserved_bytes`` what the driver keeps of it
    (the fractions multiply the rest, CUDA's total); ``graphs_inside``: the vLLM version
    planned for charges its graph estimate inside the fraction (``graphs_inside_fraction``).
    """
    gpu = Gpu(index=0, total_bytes=gpu_total_bytes, reserved_bytes=reserved_bytes)
    return plan_gpus(requests, [gpu], cap, headroom_bytes, graphs_inside)


def plan_gpus(
    requests: Sequence[ServiceRequest],
    gpus: Sequence[Gpu],
    cap: float = DEFAULT_CAP,
    headroom_bytes: int = 0,
    graphs_inside: bool = True,
) -> HostPlan:
    """Each service's GPUs and fraction on a host with ``gpus``, or ``PlanError``; with one GPU,
    every service on it (``plan_gpu``)."""
    if not requests:
        raise PlanError("no services to plan")
    for req in requests:
        _check(req)
    host = _Host({g.index: g for g in gpus}, cap, headroom_bytes, graphs_inside)
    placement = _place(requests, host)
    plans: dict[str, ServicePlan] = {}
    gpu_plans: dict[int, GpuPlan] = {}
    for on, group in _groups(requests, placement):
        milli, terms = host.fractions(group, on)
        card = min(host.gpus[i].card for i in on)
        for req in group:
            plans[req.name] = _gpu_service_plan(req, terms[req.name], milli[req.name], card, on)
        for i in on:
            gpu_plans[i] = host.gpu_plan(i, group, terms, milli)
    every = tuple(gpu_plans.get(i) or host.gpu_plan(i, [], {}, {}) for i in sorted(host.gpus))
    return _host_plan({r.name: plans[r.name] for r in requests}, every, cap)


def _host_plan(services: dict[str, ServicePlan], gpus: tuple[GpuPlan, ...], cap: float) -> HostPlan:
    """The host's plan from its GPUs' plans: with one GPU, that GPU's figures."""
    total = sum(g.total_bytes for g in gpus)
    free = sum(g.free_bytes for g in gpus)
    if len(gpus) == 1:
        fraction_sum, verdict = gpus[0].fraction_sum, f"fractions sum to {gpus[0].fraction_sum:.3f}"
    else:
        fraction_sum = None
        each = ", ".join(f"{g.fraction_sum:.3f} on GPU {g.index}" for g in gpus)
        verdict = f"fractions {each}"
    return HostPlan(
        mode="gpu",
        services=services,
        verdict=(
            f"fits: {verdict} (cap {cap:.2f}); "
            f"{free / GiB:.1f} GiB of {total / GiB:.1f} GiB stays free"
        ),
        gpu_total_bytes=total,
        cap=cap,
        budget_bytes=sum(g.budget_bytes for g in gpus),
        fraction_sum=fraction_sum,
        free_bytes=free,
        gpus=gpus,
    )


@dataclass(frozen=True)
class _Host:
    """The GPUs and the rules every one of them is planned by."""

    gpus: Mapping[int, Gpu]
    cap: float
    headroom: int
    graphs_inside: bool

    def budget(self, i: int, terms: Mapping[str, _Terms]) -> int:
        """What the fractions may take of GPU ``i``: the cap, and beyond them each process's
        memory outside its fraction and the headroom stay free."""
        card = self.gpus[i].card
        outside = sum(t.outside for t in terms.values())
        return min(math.floor(self.cap * card), card - self.headroom - outside)

    def fractions(
        self, requests: Sequence[ServiceRequest], on: tuple[int, ...]
    ) -> tuple[dict[str, int], dict[str, _Terms]]:
        """Thousandths of each GPU in ``on`` per service (one GPU, or one service's
        tensor-parallel GPUs: planned on the smallest, which bounds both the fraction and,
        vLLM taking the smallest rank's, the KV), with their terms; or ``PlanError``."""
        smallest = min(on, key=lambda i: self.gpus[i].card)
        card = self.gpus[smallest].card
        terms = {r.name: _terms(r, self.graphs_inside, len(on)) for r in requests}
        budget = self.budget(smallest, terms)
        step = -(-card // 10**FRACTION_DECIMALS)  # one 0.001 of the card, reserved per service
        milli = {
            r.name: _fixed_fraction(r, terms[r.name], card, step)
            for r in requests
            if r.gpu_memory_utilization is not None
        }
        given = sum(_requested(m, card) for m in milli.values())
        if given > budget:
            raise PlanError(
                f"the services' own gpu_memory_utilization sum to "
                f"{sum(milli.values()) / 1000:.3f}, above the {budget / card:.3f} of this GPU "
                "that llmhost_gpu_memory_cap and llmhost_gpu_headroom_gib allow; lower them"
            )
        planned = [r for r in requests if r.name not in milli]
        if planned:
            spare = budget - given
            milli |= _share(planned, [terms[r.name] for r in planned], spare, card, step)
        return milli, terms

    def refusal(self, requests: Sequence[ServiceRequest], on: tuple[int, ...]) -> PlanError | None:
        """Why ``requests`` do not fit together on ``on``, or None."""
        try:
            self.fractions(requests, on)
        except PlanError as e:
            return e
        return None

    def gpu_plan(
        self,
        i: int,
        requests: Sequence[ServiceRequest],
        terms: Mapping[str, _Terms],
        milli: Mapping[str, int],
    ) -> GpuPlan:
        gpu = self.gpus[i]
        requested = sum(_requested(m, gpu.card) for m in milli.values())
        outside = sum(t.outside for t in terms.values())
        return GpuPlan(
            index=i,
            uuid=gpu.uuid,
            total_bytes=gpu.total_bytes,
            budget_bytes=self.budget(i, terms),
            fraction_sum=round(sum(milli.values()) / 10**FRACTION_DECIMALS, FRACTION_DECIMALS),
            # Under load, when each process has taken its activation peak back.
            free_bytes=gpu.card - requested - outside,
            services=tuple(r.name for r in requests),
        )


def _groups(
    requests: Sequence[ServiceRequest], placement: Mapping[str, tuple[int, ...]]
) -> list[tuple[tuple[int, ...], list[ServiceRequest]]]:
    """The services that share GPUs, in the configured order: one group per GPU of
    single-GPU services, one per tensor-parallel service."""
    groups: dict[tuple[int, ...], list[ServiceRequest]] = {}
    for req in requests:
        groups.setdefault(placement[req.name], []).append(req)
    return list(groups.items())


def _place(requests: Sequence[ServiceRequest], host: _Host) -> dict[str, tuple[int, ...]]:
    """Each service's GPUs: its pins, else (largest first) the first that holds it of: alone
    on the smallest free GPU, beside others on the GPU with the most room, tensor parallel
    over the fewest free GPUs (the smallest ones). One GPU holds every service."""
    if len(host.gpus) == 1:
        return {r.name: (next(iter(host.gpus)),) for r in requests}
    placed = {r.name: r.gpus for r in requests if r.gpus is not None}
    _check_pins(requests, placed, host)
    loose = [r for r in requests if r.gpus is None]
    for req in sorted(loose, key=lambda r: -_alone_need(r, host)):
        placed[req.name] = _spot(req, requests, placed, host)
    return placed


def _alone_need(req: ServiceRequest, host: _Host) -> int:
    t = _terms(req, host.graphs_inside)
    return t.inside + t.kv_need + t.outside


def _spot(
    req: ServiceRequest,
    requests: Sequence[ServiceRequest],
    placed: Mapping[str, tuple[int, ...]],
    host: _Host,
) -> tuple[int, ...]:
    """Where ``req`` goes among the services ``placed`` so far, or ``PlanError``."""
    held = {i: [r for r in requests if placed.get(r.name) == (i,)] for i in host.gpus}
    split = {i for on in placed.values() if len(on) > 1 for i in on}
    free = sorted(
        (g for g in host.gpus.values() if not held[g.index] and g.index not in split),
        key=lambda g: (g.total_bytes, g.index),
    )
    alone = [g.index for g in free if not host.refusal([req], (g.index,))]
    if alone:
        return (alone[0],)
    shared = [i for i in held if held[i] and not host.refusal([*held[i], req], (i,))]
    if shared:
        room = {i: host.gpus[i].card - sum(_alone_need(r, host) for r in held[i]) for i in shared}
        return (max(shared, key=lambda i: (room[i], -i)),)
    for tp in TENSOR_PARALLEL_SIZES[1:]:
        if tp > len(free) or tensor_parallel_problem(req.meta, tp):
            continue
        fitting = [on for on in combinations(sorted(g.index for g in free), tp)
                   if not host.refusal([req], on)]  # fmt: skip
        if fitting:
            return min(fitting, key=lambda on: (sum(host.gpus[i].total_bytes for i in on), on))
    raise _nowhere(req, held, [g.index for g in free], placed, host)


def _nowhere(
    req: ServiceRequest,
    held: Mapping[int, list[ServiceRequest]],
    free: list[int],
    placed: Mapping[str, tuple[int, ...]],
    host: _Host,
) -> PlanError:
    """The refusal for a service no GPU holds: what would make it fit on the GPU that comes
    closest (a free one alone, else the one with the most room), or who holds every GPU."""
    splits = sorted({n: on for n, on in placed.items() if len(on) > 1}.items())
    if not free and not any(held.values()):
        who = ", ".join(f"{n} is split over GPUs {', '.join(map(str, on))}" for n, on in splits)
        names = " and ".join(n for n, _ in splits)
        return PlanError(
            f"{req.name}: no GPU is left for it: {who} (tensor parallel: no single GPU holds "
            f"it), and a split service shares none of its GPUs; add a GPU, or lower {names}'s "
            "wishes"
        )
    i = max(free or [i for i in held if held[i]], key=lambda i: (host.gpus[i].card, -i))
    beside = held[i]
    # _spot tried this GPU: it does not hold them.
    error = host.refusal([*beside, req], (i,))
    where = "alone" if not beside else f"beside {', '.join(r.name for r in beside)}"
    return PlanError(
        f"{req.name}: no GPU holds it (alone, beside another service, or split with tensor "
        f"parallel over free GPUs); {where} on {host.gpus[i].label}: {error}"
    )


def _check_pins(
    requests: Sequence[ServiceRequest], placed: Mapping[str, tuple[int, ...]], host: _Host
) -> None:
    """Pinned services split over several GPUs: vLLM can split the model so, and no other
    service is pinned to those GPUs (a split service shares none)."""
    for req in requests:
        on = placed.get(req.name, ())
        if len(on) < 2:
            continue
        key = f"llmhost_services[{req.name!r}].gpus {list(on)}"
        problem = tensor_parallel_problem(req.meta, len(on))
        if problem:
            raise PlanError(
                f"{key}: vLLM cannot split {req.label or req.name} over {len(on)} GPUs "
                f"({problem}); pin fewer GPUs, or remove gpus to have it placed"
            )
        others = [n for n, o in placed.items() if n != req.name and set(o) & set(on)]
        if others:
            raise PlanError(
                f"{key}: tensor parallel shares no GPU, but {', '.join(others)} is pinned to "
                "one of them; pin them apart, or remove gpus to have them placed"
            )


def _share(
    requests: Sequence[ServiceRequest], terms: Sequence[_Terms], budget: int, total: int, step: int
) -> dict[str, int]:
    """Fractions for the services the planner sizes, in ``budget`` bytes, or ``PlanError``:
    each gets its wishes' KV, and the spare is shared out in proportion to those."""
    usable = budget - step * len(requests)
    need = sum(t.kv_need for t in terms)
    spare = usable - sum(t.inside for t in terms) - need
    if spare < 0:
        _refuse(requests, terms, usable, total, budget)
    return {
        req.name: _milli(t, t.kv_need + spare * t.kv_need // need, total, step)
        for req, t in zip(requests, terms, strict=True)
    }


def _refuse(
    requests: Sequence[ServiceRequest],
    terms: Sequence[_Terms],
    usable: int,
    total: int,
    budget: int,
) -> None:
    """Raise a ``PlanError`` blaming the service with the largest KV need."""
    need = [t.kv_need for t in terms]
    fixed = sum(t.inside for t in terms)
    i = max(range(len(requests)), key=lambda k: need[k])
    req = requests[i]
    available = usable - fixed - (sum(need) - need[i])
    if available <= 0:
        raise PlanError(
            f"{req.name}: weights and overheads ({fixed / GiB:.1f} GiB) and the other "
            f"services' KV ({(sum(need) - need[i]) / GiB:.1f} GiB) leave no KV room in the "
            f"{budget / GiB:.1f} GiB budget of this {total / GiB:.1f} GiB GPU; use a GPU with "
            "more memory, a smaller model, or lower the other service's wishes"
        )
    others = [
        f"lower {other.name}'s wishes (its KV needs {n / GiB:.1f} GiB)"
        for other, n in zip(requests, need, strict=True)
        if other is not req and n
    ]
    options = _knobs(req, terms[i].kv_bytes_per_token, GPU_BLOCK_SIZE, available) + others
    options = options or ["use a GPU with more memory"]
    raise PlanError(
        f"{req.name}: {req.concurrency} x {req.max_model_len}-token sequences need "
        f"{need[i] / GiB:.1f} GiB of KV but {available / GiB:.1f} GiB remain; {_either(options)}"
    )


def plan_cpu(
    requests: Sequence[ServiceRequest],
    kv_space_gib: int | None = None,
    block_size: int = CPU_BLOCK_SIZE,
) -> HostPlan:
    """``VLLM_CPU_KVCACHE_SPACE`` per service: the given GiB, or just enough for its wishes."""
    if not requests:
        raise PlanError("no services to plan")
    plans = {}
    for req in requests:
        _check(req)
        b = kv_bytes_per_token(req.meta, req.kv_cache_dtype)
        per_seq = tokens_per_sequence(req.meta, req.max_model_len, block_size)
        need = req.concurrency * per_seq * b
        space = kv_space_gib if kv_space_gib is not None else max(1, -(-need // GiB))
        kv_tokens = space * GiB // (block_size * b) * block_size
        if kv_tokens < req.concurrency * per_seq:
            options = [f"raise llmhost_cpu_kv_cache_gib to {-(-need // GiB)} (or unset it)"]
            options += _knobs(req, b, block_size, space * GiB)
            raise PlanError(
                f"{req.name}: {req.concurrency} x {req.max_model_len}-token sequences need "
                f"{need / GiB:.1f} GiB of KV but llmhost_cpu_kv_cache_gib gives {space} GiB; "
                f"{_either(options)}"
            )
        plans[req.name] = ServicePlan(
            name=req.name,
            label=req.label,
            weights_bytes=req.meta.weights_bytes,
            context_bytes=0,
            activation_bytes=0,
            cuda_graph_bytes=0,
            kv_bytes=space * GiB,
            kv_bytes_per_token=b,
            kv_tokens=kv_tokens,
            max_model_len=req.max_model_len,
            concurrency=req.concurrency,
            max_concurrency=round(kv_tokens / per_seq, 2),
            gpu_memory_utilization=None,
            kv_cache_memory_bytes=None,
            cpu_kv_cache_gib=space,
            notes=_notes(req),
        )
    total_gib = sum(p.cpu_kv_cache_gib or 0 for p in plans.values())
    return HostPlan(
        mode="cpu",
        services=plans,
        verdict=f"fits: {total_gib} GiB of host RAM for KV (VLLM_CPU_KVCACHE_SPACE) plus weights",
    )


def plan_services(
    settings: Settings,
    gpus: int | Sequence[Gpu] | None,
    metas: Mapping[str, ModelMeta],
    gpu_reserved_bytes: int = DRIVER_RESERVED_BYTES,
) -> HostPlan:
    """The plan for one host's validated settings; ``gpus`` is None on CPU hosts, the host's
    GPUs, or one GPU's nvidia-smi total with ``gpu_reserved_bytes`` the driver's part of it."""
    if isinstance(gpus, int):
        gpus = [Gpu(index=0, total_bytes=gpus, reserved_bytes=gpu_reserved_bytes)]
    requests = []
    # Each replica is a request of its own: placed apart where they fit (spread before packing).
    for svc in settings.instances:
        if svc.service_name not in metas:
            raise PlanError(f"{svc.name}: no model metadata for {svc.model.repo or svc.model.path}")
        requests.append(
            ServiceRequest(
                name=svc.name,
                meta=metas[svc.service_name],
                max_model_len=svc.max_model_len,
                concurrency=svc.concurrency,
                kv_cache_dtype=svc.kv_cache_dtype,
                max_num_seqs=svc.max_num_seqs,
                max_num_batched_tokens=svc.max_num_batched_tokens,
                enforce_eager=svc.enforce_eager,
                label=svc.model.repo or svc.model.path or "",
                gpu_memory_utilization=svc.gpu_memory_utilization,
                gpus=None
                if svc.gpus is None or not gpus
                else _pinned(svc.service_name, svc.gpus, gpus),
            )
        )
    if not settings.gpu:
        return plan_cpu(requests, kv_space_gib=settings.cpu_kv_cache_gib)
    if not gpus:
        raise PlanError(
            "llmhost_gpu is true but the GPU's total memory is unknown; "
            "pass it (llmhost plan --gpu-memory 80GB) or let preflight read it"
        )
    return plan_gpus(
        requests,
        gpus,
        cap=settings.gpu_memory_cap,
        headroom_bytes=math.ceil(settings.gpu_headroom_gib * GiB),
        graphs_inside=graphs_inside_fraction(settings.vllm_version),
    )


def _pinned(name: str, pins: Sequence[int | str], gpus: Sequence[Gpu]) -> tuple[int, ...]:
    """The indices of the GPUs a service's ``gpus`` names (indices or UUIDs), or ``PlanError``
    naming one that is not on the host."""
    by_uuid = {g.uuid: g.index for g in gpus if g.uuid}
    known = {g.index for g in gpus}
    found: list[int] = []
    for pin in pins:
        index = by_uuid.get(pin) if isinstance(pin, str) else pin
        if index is None or index not in known:
            have = ", ".join(f"{g.index} ({g.uuid})" if g.uuid else str(g.index) for g in gpus)
            raise PlanError(
                f"llmhost_services[{name!r}].gpus: {pin!r} is not a GPU of this host, which has "
                f"{have}; pin one of those (by index, or by UUID as nvidia-smi -L shows it), "
                "or remove gpus to have the planner place it"
            )
        if index in found:
            raise PlanError(
                f"llmhost_services[{name!r}].gpus names GPU {index} twice (by index and by "
                "UUID); name each GPU once"
            )
        found.append(index)
    return tuple(found)
