"""``llmhost bench --sweep``: one service's batching tried config by config (pure: no SSH).

Each config is the deployed service with ``max_num_seqs`` / ``max_num_batched_tokens`` changed,
applied by the deploy itself (``llmhost_service_overrides`` on top of the host's own), so only
that unit restarts, health-gated, rolled back if it cannot serve. The memory stays the plan's:
on a GPU host every service's fraction is pinned to the applied plan's, and ``max_num_seqs``
stops at the sequences of the service's workload that its planned KV cache holds (beyond it
vLLM preempts, which the sweep would measure instead of batching). The config the host runs is
tried last, so a sweep that ends there needs no restart to put it back.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from llmhost.applied_plan import AppliedPlan
from llmhost.bench.results import Metrics
from llmhost.plan.planner import CPU_BLOCK_SIZE, GPU_BLOCK_SIZE, rounded_to_blocks
from llmhost.settings import OVERRIDES_KEY, ServiceSpec, Settings, python_literal

KEYS = ("max_num_seqs", "max_num_batched_tokens")


class SweepError(ValueError):
    """A sweep that cannot start; the message names the argument and what to pass."""


@dataclass(frozen=True)
class Config:
    max_num_seqs: int
    max_num_batched_tokens: int

    def __str__(self) -> str:
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


@dataclass
class Tried:
    """One config: whether the deploy switched to it, the service's numbers under the others'
    load, and the other services' requests while the switch ran."""

    config: Config
    deployed: bool
    switched: bool
    measured: dict[str, Metrics] = field(default_factory=dict)
    during_switch: dict[str, Metrics] = field(default_factory=dict)
    error: str = ""


def parse(texts: list[str]) -> dict[str, list[int]]:
    """``--sweep KEY=V1,V2`` arguments as {key: values}; SweepError for anything else."""
    wanted: dict[str, list[int]] = {}
    for text in texts:
        key, sep, values = text.partition("=")
        if key not in KEYS or not sep:
            raise SweepError(f"--sweep {text}: write KEY=V1,V2 with KEY one of {', '.join(KEYS)}")
        if key in wanted:
            raise SweepError(f"--sweep {key} is given twice: list all its values in one")
        try:
            numbers = [int(v) for v in values.split(",")]
        except ValueError:
            numbers = []
        if not numbers or min(numbers) < 1:
            raise SweepError(f"--sweep {text}: the values are whole numbers, e.g. {key}=16,32")
        wanted[key] = list(dict.fromkeys(numbers))
    return wanted


def deployed(svc: ServiceSpec) -> Config:
    """The config ``svc``'s data gives it: what the host runs."""
    return Config(svc.max_num_seqs, svc.max_num_batched_tokens)


def configs(svc: ServiceSpec, wanted: Mapping[str, list[int]]) -> list[Config]:
    """Every combination of the values (a key not swept keeps the deployed value), the
    deployed config last when it is one of them."""
    now = deployed(svc)
    values = [wanted.get(k, [getattr(now, k)]) for k in KEYS]
    found = [Config(*pair) for pair in itertools.product(*values)]
    return sorted(found, key=lambda c: c == now)


def workload_cap(plan: AppliedPlan, svc: ServiceSpec) -> int:
    """Sequences of ``svc``'s workload (prompt + output tokens) its planned KV cache holds at
    once: the most ``max_num_seqs`` a sweep tries."""
    applied = plan.services[svc.instances()[0].name]
    block = GPU_BLOCK_SIZE if plan.gpu else CPU_BLOCK_SIZE
    tokens = svc.workload.prompt_tokens + svc.workload.output_tokens
    return applied.kv_tokens // rounded_to_blocks(tokens, block)


def fraction_pins(plan: AppliedPlan, settings: Settings) -> dict[str, dict[str, float]]:
    """GPU hosts: every service's fraction as the applied plan has it, so that another
    ``max_num_seqs`` changes no fraction (the planner's, not the sweep's); none on CPU hosts."""
    if not plan.gpu:
        return {}
    pins = {}
    for svc in settings.services:
        fractions = {plan.services[u.name].gpu_memory_utilization for u in svc.instances()}
        if len(fractions) != 1 or None in fractions:
            raise SweepError(
                f"{svc.name}: its units have the fractions {sorted(map(str, fractions))} in the "
                "applied plan; the sweep keeps one fraction per service: deploy first"
            )
        pins[svc.name] = {"gpu_memory_utilization": fractions.pop()}
    return pins


def overrides(
    data: Mapping[str, Any],
    service: str,
    config: Config | None,
    pins: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The host's ``llmhost_service_overrides`` with ``config`` for ``service`` and ``pins``
    on top (pyinfra's ``--data`` replaces the key whole: it must carry the host's own)."""
    merged = {name: dict(v) for name, v in (data.get(OVERRIDES_KEY) or {}).items()}
    for name, pin in (pins or {}).items():
        merged.setdefault(name, {}).update(pin)
    if config is not None:
        merged.setdefault(service, {}).update(asdict(config))
    return merged


def check(data: Mapping[str, Any], where: str, service: str, tried: list[Config], cap: int) -> None:
    """SweepError unless every config is valid data for the host and within ``cap``."""
    for config in tried:
        if config.max_num_seqs > cap:
            raise SweepError(
                f"--sweep max_num_seqs={config.max_num_seqs}: {service}'s planned KV cache holds "
                f"{cap} sequences of its workload; beyond that vLLM preempts instead of batching: "
                f"sweep up to {cap}"
            )
        changed = {**data, OVERRIDES_KEY: overrides(data, service, config)}
        try:
            Settings.from_host_data(changed, where=f"{where} with --sweep {config}")
        except ValueError as e:
            raise SweepError(str(e)) from None


def best(results: list[Tried], service: str) -> Tried | None:
    """The config whose requests met the targets most often per second (then: more tokens/s)."""
    served = [t for t in results if t.switched and service in t.measured]
    if not served:
        return None
    return max(
        served,
        key=lambda t: (t.measured[service].goodput_rps, t.measured[service].output_tokens_per_s),
    )


def override_line(data: Mapping[str, Any], service: str, config: Config) -> str:
    """The group-data line that deploys ``config``: the host's own overrides with it."""
    return f"{OVERRIDES_KEY} = {python_literal(overrides(data, service, config))}"


def to_dict(results: list[Tried], winner: Tried | None, line: str | None) -> dict[str, Any]:
    return {
        "configs": [
            {
                **asdict(t.config),
                "deployed": t.deployed,
                "switched": t.switched,
                "error": t.error,
                "measured": {n: asdict(m) for n, m in t.measured.items()},
                "during_switch": {n: asdict(m) for n, m in t.during_switch.items()},
            }
            for t in results
        ],
        "best": asdict(winner.config) if winner else None,
        "override": line,
    }
