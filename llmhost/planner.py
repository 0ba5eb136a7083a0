"""VRAM planner: each service's ``--gpu-memory-utilization`` derived from its model and wishes.

Pure: numbers and model metadata in, a ``HostPlan`` out (no pyinfra, no I/O), so the CLI, the
deploy and the host tests share one answer to "does it fit, with how much headroom?".

The rule, per GPU:

* budget = min(cap x total, total - headroom); both services together stay within it.
* each service needs: weights + overhead (CUDA context, activation peak, CUDA graphs) + KV for
  ``concurrency`` sequences of ``max_model_len`` tokens. If the sum exceeds the budget the plan
  is refused with a ``PlanError`` that names the service, the numbers and the knobs.
* spare memory is shared out in proportion to each service's KV need (a service that asked
  for twice the KV gets twice the extra), so both gain the same relative concurrency.
* fractions are rounded down to 3 decimals, after reserving one 0.001 step per service so the
  rounding never eats into what a service asked for; their sum never exceeds the cap.

vLLM takes the fraction of the GPU's TOTAL memory and sizes its KV cache as
total x fraction - weights - activation peak - non-torch memory - CUDA graphs (FACTS.md), so
the KV tokens reported here are what it should log as "GPU KV cache size: N tokens" when the
overhead estimates below hold; they are deliberately generous, so vLLM usually finds more.
On CPU hosts (vLLM's CPU build) there is no fraction: the KV space is an integer number of GiB
(``VLLM_CPU_KVCACHE_SPACE``) per service.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from llmhost.catalogue import ModelMeta

if TYPE_CHECKING:
    from llmhost.settings import Settings

GiB = 1 << 30
MiB = 1 << 20
DEFAULT_CAP = 0.90
FRACTION_DECIMALS = 3
# vLLM's default --block-size on CUDA: KV is allocated in blocks of this many tokens.
GPU_BLOCK_SIZE = 16
# vLLM's CPU backend block size, used to predict its "CPU KV cache size: N tokens" log line.
CPU_BLOCK_SIZE = 128
# Bytes per KV element: "auto" is the model's 16-bit dtype (vLLM serves float32 checkpoints in
# 16 bits too), fp8 halves it.
KV_ELEMENT_BYTES = {"auto": 2, "fp8": 1}

CUDA_CONTEXT_BYTES = 1 * GiB
"""Per-process memory outside PyTorch's allocator: CUDA context, cuBLAS/attention workspaces.

Measured here (H200, driver 580.159.04, PyTorch 2.11+cu130): a fresh process holds 0.61 GiB
after creating its context and 0.68 GiB outside the allocator after a bf16 matmul and a flash
attention call. vLLM's profiler adds 0.16-0.23 GiB of its own "non_torch_memory" on one GPU
(vLLM PRs #12126, #14447). 1 GiB covers both.
"""

ACTIVATION_MARGIN = 1.25
"""Safety factor on ``activation_bytes``; the formula alone gave 1.15 GiB where vLLM measured
1.26 GiB ("PyTorch activation peak memory", Llama-3-8B, 8192 tokens, vLLM PR #10511)."""

CUDA_GRAPH_BYTES_PER_LAYER = 24 * MiB
"""CUDA-graph memory per decoder layer unless ``enforce_eager``.

vLLM captures graphs for up to 67 batch sizes by default; its logs show 6-28 MiB per captured
size (vLLM PR #22897), i.e. about 0.5-1 GiB per instance, and the estimate
it charges since v0.21 can over-count (#45178, #53013). 24 MiB x layers gives 0.7 GiB for a
7B model and 1.5 GiB for a 33B one: the upper end, pending a measurement on the target card.
"""


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
    weights_bytes: int
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

    @property
    def overhead_bytes(self) -> int:
        return self.context_bytes + self.activation_bytes + self.cuda_graph_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.label,
            "weights_gib": _gib(self.weights_bytes),
            "overhead_gib": _gib(self.overhead_bytes),
            "overhead": {
                "cuda_context_gib": _gib(self.context_bytes),
                "activation_gib": _gib(self.activation_bytes),
                "cuda_graphs_gib": _gib(self.cuda_graph_bytes),
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


def cuda_graph_bytes(meta: ModelMeta, enforce_eager: bool) -> int:
    return 0 if enforce_eager else meta.num_layers * CUDA_GRAPH_BYTES_PER_LAYER


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
    """One service's memory terms inside its fraction, before the KV share."""

    kv_bytes_per_token: int
    activation: int
    cuda_graphs: int
    # Weights, context, activation peak and graphs: what the fraction holds besides KV.
    fixed: int
    # The KV its wishes need (concurrency x max_model_len tokens).
    kv_need: int


def _terms(req: ServiceRequest) -> _Terms:
    bpt = kv_bytes_per_token(req.meta, req.kv_cache_dtype)
    activation = activation_bytes(req.meta, req.max_num_batched_tokens, req.max_num_seqs)
    graphs = cuda_graph_bytes(req.meta, req.enforce_eager)
    return _Terms(
        kv_bytes_per_token=bpt,
        activation=activation,
        cuda_graphs=graphs,
        fixed=req.meta.weights_bytes + CUDA_CONTEXT_BYTES + activation + graphs,
        kv_need=req.concurrency
        * tokens_per_sequence(req.meta, req.max_model_len, GPU_BLOCK_SIZE)
        * bpt,
    )


def _milli(t: _Terms, kv: int, total: int, step: int) -> int:
    """The fraction, in 0.001 of the card, that holds ``t``'s terms and ``kv``, rounded up by
    ``step`` (one 0.001) so that truncation never takes from the KV."""
    return (t.fixed + kv + step) * 10**FRACTION_DECIMALS // total


def _gpu_service_plan(req: ServiceRequest, t: _Terms, milli: int, total: int) -> ServicePlan:
    """What ``milli`` thousandths of the card hold for the service."""
    kv_bytes = milli * total // 10**FRACTION_DECIMALS - t.fixed
    kv_tokens = kv_bytes // (GPU_BLOCK_SIZE * t.kv_bytes_per_token) * GPU_BLOCK_SIZE
    per_seq = tokens_per_sequence(req.meta, req.max_model_len, GPU_BLOCK_SIZE)
    return ServicePlan(
        name=req.name,
        label=req.label,
        weights_bytes=req.meta.weights_bytes,
        context_bytes=CUDA_CONTEXT_BYTES,
        activation_bytes=t.activation,
        cuda_graph_bytes=t.cuda_graphs,
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


def _fixed_fraction(req: ServiceRequest, t: _Terms, total: int, step: int) -> int:
    """A service's own fraction in thousandths, or ``PlanError`` if it cannot hold one
    sequence of ``max_model_len`` (vLLM refuses to start then)."""
    assert req.gpu_memory_utilization is not None
    milli = round(req.gpu_memory_utilization * 10**FRACTION_DECIMALS)
    kv = milli * total // 10**FRACTION_DECIMALS - t.fixed
    one = tokens_per_sequence(req.meta, req.max_model_len, GPU_BLOCK_SIZE) * t.kv_bytes_per_token
    if kv < one:
        least = _milli(t, one, total, step) / 10**FRACTION_DECIMALS
        raise PlanError(
            f"{req.name}: gpu_memory_utilization {req.gpu_memory_utilization} is "
            f"{milli * total / 10**FRACTION_DECIMALS / GiB:.1f} GiB of this {total / GiB:.1f} GiB "
            f"GPU; weights and overheads take {t.fixed / GiB:.1f} GiB and leave "
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
) -> HostPlan:
    """Fractions of one GPU for co-located services, or ``PlanError``."""
    if not requests:
        raise PlanError("no services to plan")
    for req in requests:
        _check(req)
    total = gpu_total_bytes
    budget = min(math.floor(cap * total), total - headroom_bytes)
    step = -(-total // 10**FRACTION_DECIMALS)  # one 0.001 of the card, reserved per service
    terms = {r.name: _terms(r) for r in requests}
    milli = {
        r.name: _fixed_fraction(r, terms[r.name], total, step)
        for r in requests
        if r.gpu_memory_utilization is not None
    }
    given = sum(milli.values()) * total // 10**FRACTION_DECIMALS
    if given > budget:
        raise PlanError(
            f"the services' own gpu_memory_utilization sum to {sum(milli.values()) / 1000:.3f}, "
            f"above the {budget / total:.3f} of this GPU that llmhost_gpu_memory_cap and "
            "llmhost_gpu_headroom_gib allow; lower them"
        )
    planned = [r for r in requests if r.name not in milli]
    if planned:
        milli |= _share(planned, [terms[r.name] for r in planned], budget - given, total, step)
    plans = {r.name: _gpu_service_plan(r, terms[r.name], milli[r.name], total) for r in requests}
    fixed = sum(t.fixed for t in terms.values())
    fraction_sum = sum(p.gpu_memory_utilization or 0 for p in plans.values())
    fraction_sum = round(fraction_sum, FRACTION_DECIMALS)
    free = total - sum(p.kv_bytes for p in plans.values()) - fixed
    return HostPlan(
        mode="gpu",
        services=plans,
        verdict=(
            f"fits: fractions sum to {fraction_sum:.3f} (cap {cap:.2f}); "
            f"{free / GiB:.1f} GiB of {total / GiB:.1f} GiB stays free"
        ),
        gpu_total_bytes=total,
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
    spare = usable - sum(t.fixed for t in terms) - need
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
    fixed = sum(t.fixed for t in terms)
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
    settings: Settings, gpu_total_bytes: int | None, metas: Mapping[str, ModelMeta]
) -> HostPlan:
    """The plan for one host's validated settings; ``gpu_total_bytes`` is None on CPU hosts."""
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
    )
