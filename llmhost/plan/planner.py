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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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

MODELLED_VERSIONS = ("0.33", "0.25")
"""The vLLM releases whose accounting this planner models: the pin, and the one it was checked
against on a real GPU. 0.25 charges no graph estimate inside the fraction."""


def graphs_inside_fraction(vllm_version: str) -> bool:
    """Whether ``vllm_version`` takes its CUDA-graph estimate from the KV budget."""
    return not vllm_version.startswith("0.25.")


class PlanError(ValueError):
    """A plan that cannot work; the message names the service, the numbers and the knob."""


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

    @property
    def overhead_bytes(self) -> int:
        """What the fraction holds besides weights and KV."""
        graphs = self.cuda_graph_bytes if self.graphs_inside else 0
        return self.activation_bytes + self.non_torch_bytes + graphs

    @property
    def outside_bytes(self) -> int:
        """What the process holds beyond its fraction."""
        return self.context_bytes + (0 if self.graphs_inside else self.cuda_graph_bytes)

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
            "outside_fraction": {"cuda_context_gib": _gib(self.context_bytes)},
            "kv_gib": _gib(self.kv_bytes),
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_tokens": self.kv_tokens,
            "max_model_len": self.max_model_len,
            "concurrency": self.concurrency,
            "max_concurrency": self.max_concurrency,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "kv_cache_memory_bytes": self.kv_cache_memory_bytes,
            "cpu_kv_cache_gib": self.cpu_kv_cache_gib,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class HostPlan:
    mode: Literal["gpu", "cpu"]
    services: Mapping[str, ServicePlan]
    verdict: str
    gpu_total_bytes: int | None = None
    cap: float | None = None
    budget_bytes: int | None = None
    fraction_sum: float | None = None
    # GPU memory no service reserves once both run (total - sum of fractions x total).
    free_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "gpu_total_gib": _gib(self.gpu_total_bytes),
            "cap": self.cap,
            "budget_gib": _gib(self.budget_bytes),
            "fraction_sum": self.fraction_sum,
            "free_gib": _gib(self.free_bytes),
            "verdict": self.verdict,
            "services": {name: svc.to_dict() for name, svc in self.services.items()},
        }

    def render_table(self) -> str:
        """One row per service, a total row, then the verdict and any notes."""
        gpu = self.mode == "gpu"
        svcs = list(self.services.values())
        head = ["service", "model", "weights GiB"]
        head += ["overhead GiB"] if gpu else []
        head += ["KV GiB", "KV tokens", "seqs x max_model_len"]
        head += ["fraction"] if gpu else ["KV space GiB"]
        rows = []
        for p in svcs:
            row = [p.name, p.label, f"{p.weights_bytes / GiB:.2f}"]
            row += [f"{p.overhead_bytes / GiB:.2f}"] if gpu else []
            row += [f"{p.kv_bytes / GiB:.2f}", f"{p.kv_tokens:,}"]
            row += [f"{p.max_concurrency:.2f} x {p.max_model_len}"]
            row += [f"{p.gpu_memory_utilization:.3f}"] if gpu else [str(p.cpu_kv_cache_gib)]
            rows.append(row)
        total = ["total", "", f"{sum(p.weights_bytes for p in svcs) / GiB:.2f}"]
        total += [f"{sum(p.overhead_bytes for p in svcs) / GiB:.2f}"] if gpu else []
        total += [f"{sum(p.kv_bytes for p in svcs) / GiB:.2f}", "", ""]
        total += (
            [f"{self.fraction_sum:.3f}"]
            if gpu
            else [str(sum(p.cpu_kv_cache_gib or 0 for p in svcs))]
        )
        rows.append(total)
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = [
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in [head, *rows]
        ]
        lines.append(f"verdict: {self.verdict}")
        lines += [f"note: {p.name}: {note}" for p in svcs for note in p.notes]
        return "\n".join(lines)


def _gib(value: int | None) -> float | None:
    return None if value is None else round(value / GiB, 2)


def kv_bytes_per_token(meta: ModelMeta, kv_cache_dtype: str = "auto") -> int:
    """2 (K and V) x layers x kv heads x head dim x bytes per element."""
    try:
        element = KV_ELEMENT_BYTES[kv_cache_dtype]
    except KeyError:
        raise PlanError(
            f"kv_cache_dtype {kv_cache_dtype!r}: use one of {sorted(KV_ELEMENT_BYTES)}"
        ) from None
    return 2 * meta.num_layers * meta.num_kv_heads * meta.head_dim * element


def tokens_per_sequence(meta: ModelMeta, max_model_len: int, block_size: int) -> int:
    """KV slots one full-length sequence holds: a sliding window caps it, blocks round it up."""
    tokens = min(max_model_len, meta.sliding_window or max_model_len)
    return -(-tokens // block_size) * block_size


def activation_bytes(meta: ModelMeta, max_num_batched_tokens: int, max_num_seqs: int) -> int:
    """Peak of vLLM's profiling forward pass over ``max_num_batched_tokens`` tokens.

    Per token in 16-bit: the MLP's gate/up output and activation (3 x intermediate) and a few
    hidden-state copies (4 x hidden); plus float32 logits and probabilities for
    ``max_num_seqs`` rows in the sampler. Flash attention keeps no score matrix.
    """
    per_token = 2 * (3 * meta.intermediate_size + 4 * meta.hidden_size)
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
    # What its fraction holds besides KV, and what the process holds beyond its fraction.
    inside: int
    outside: int
    # The KV its wishes need (concurrency x max_model_len tokens).
    kv_need: int


def _terms(req: ServiceRequest, graphs_inside: bool) -> _Terms:
    bpt = kv_bytes_per_token(req.meta, req.kv_cache_dtype)
    weights = math.ceil(req.meta.weights_bytes * WEIGHTS_LOADED_FACTOR)
    activation = activation_bytes(req.meta, req.max_num_batched_tokens, req.max_num_seqs)
    graphs = cuda_graph_bytes(req.meta, req.enforce_eager, req.max_num_seqs)
    per_seq = tokens_per_sequence(req.meta, req.max_model_len, GPU_BLOCK_SIZE)
    return _Terms(
        kv_bytes_per_token=bpt,
        weights=weights,
        activation=activation,
        non_torch=NON_TORCH_BYTES,
        cuda_graphs=graphs,
        graphs_inside=graphs_inside,
        inside=weights + activation + NON_TORCH_BYTES + (graphs if graphs_inside else 0),
        outside=CUDA_CONTEXT_BYTES + (0 if graphs_inside else graphs),
        kv_need=req.concurrency * per_seq * bpt,
    )


def _milli(t: _Terms, kv: int, card: int, step: int) -> int:
    """The fraction, in 0.001 of the card, that holds ``t``'s terms and ``kv``, rounded up by
    ``step`` (one 0.001) so that truncation never takes from the KV."""
    return (t.inside + kv + step) * 10**FRACTION_DECIMALS // card


def _requested(milli: int, card: int) -> int:
    """vLLM's requested memory for a fraction: ceil(CUDA's total x fraction)."""
    return -(-card * milli // 10**FRACTION_DECIMALS)


def _gpu_service_plan(req: ServiceRequest, t: _Terms, milli: int, card: int) -> ServicePlan:
    """What ``milli`` thousandths of the card (CUDA's total) hold for the service."""
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
        notes=_notes(req) + _short_of_wish(req, kv_tokens / per_seq),
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
    if not requests:
        raise PlanError("no services to plan")
    for req in requests:
        _check(req)
    card = gpu_total_bytes - reserved_bytes
    terms = {r.name: _terms(r, graphs_inside) for r in requests}
    outside = sum(t.outside for t in terms.values())
    # The fractions, and beyond them each process's context, leave the headroom free.
    budget = min(math.floor(cap * card), card - headroom_bytes - outside)
    step = -(-card // 10**FRACTION_DECIMALS)  # one 0.001 of the card, reserved per service
    milli = {
        r.name: _fixed_fraction(r, terms[r.name], card, step)
        for r in requests
        if r.gpu_memory_utilization is not None
    }
    given = sum(_requested(m, card) for m in milli.values())
    if given > budget:
        raise PlanError(
            f"the services' own gpu_memory_utilization sum to {sum(milli.values()) / 1000:.3f}, "
            f"above the {budget / card:.3f} of this GPU that llmhost_gpu_memory_cap and "
            "llmhost_gpu_headroom_gib allow; lower them"
        )
    planned = [r for r in requests if r.name not in milli]
    if planned:
        milli |= _share(planned, [terms[r.name] for r in planned], budget - given, card, step)
    plans = {r.name: _gpu_service_plan(r, terms[r.name], milli[r.name], card) for r in requests}
    fraction_sum = round(sum(milli.values()) / 10**FRACTION_DECIMALS, FRACTION_DECIMALS)
    # Under load, when each process has taken its activation peak back.
    free = card - sum(_requested(m, card) for m in milli.values()) - outside
    return HostPlan(
        mode="gpu",
        services=plans,
        verdict=(
            f"fits: fractions sum to {fraction_sum:.3f} (cap {cap:.2f}); "
            f"{free / GiB:.1f} GiB of {gpu_total_bytes / GiB:.1f} GiB stays free"
        ),
        gpu_total_bytes=gpu_total_bytes,
        cap=cap,
        budget_bytes=budget,
        fraction_sum=fraction_sum,
        free_bytes=free,
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
    gpu_total_bytes: int | None,
    metas: Mapping[str, ModelMeta],
    gpu_reserved_bytes: int = DRIVER_RESERVED_BYTES,
) -> HostPlan:
    """The plan for one host's validated settings; ``gpu_total_bytes`` (nvidia-smi's) is None
    on CPU hosts, ``gpu_reserved_bytes`` the driver's part of it where the host told."""
    requests = []
    for svc in settings.services:
        if svc.name not in metas:
            raise PlanError(f"{svc.name}: no model metadata for {svc.model.repo or svc.model.path}")
        requests.append(
            ServiceRequest(
                name=svc.name,
                meta=metas[svc.name],
                max_model_len=svc.max_model_len,
                concurrency=svc.concurrency,
                kv_cache_dtype=svc.kv_cache_dtype,
                max_num_seqs=svc.max_num_seqs,
                max_num_batched_tokens=svc.max_num_batched_tokens,
                enforce_eager=svc.enforce_eager,
                label=svc.model.repo or svc.model.path or "",
                gpu_memory_utilization=svc.gpu_memory_utilization,
            )
        )
    if not settings.gpu:
        return plan_cpu(requests, kv_space_gib=settings.cpu_kv_cache_gib)
    if gpu_total_bytes is None:
        raise PlanError(
            "llmhost_gpu is true but the GPU's total memory is unknown; "
            "pass it (llmhost plan --gpu-memory 80GB) or let preflight read it"
        )
    return plan_gpu(
        requests,
        gpu_total_bytes,
        cap=settings.gpu_memory_cap,
        headroom_bytes=math.ceil(settings.gpu_headroom_gib * GiB),
        reserved_bytes=gpu_reserved_bytes,
        graphs_inside=graphs_inside_fraction(settings.vllm_version),
    )
