"""``llmhost status``'s screen for one host, from what ``llmhost.remote.agent`` read there
(pure: no pyinfra, no SSH): Prometheus's answers, or the services' raw ``/metrics`` and
nvidia-smi's CSV when monitoring is off.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from llmhost.applied_plan import AppliedPlan
from llmhost.facts.nvidia import NvidiaComputeApps, NvidiaGpus
from llmhost.gateway.config import USAGE_METRICS
from llmhost.monitoring import gpu_exporter as ge
from llmhost.monitoring.alerts import KV_USAGE, RUNNING, WAITING
from llmhost.monitoring.scrape import JOB_VLLM

GIB = 1024**3
TTFT = "vllm:time_to_first_token_seconds"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GEN_TOKENS = "vllm:generation_tokens_total"


@dataclass
class ServiceStatus:
    name: str
    active: str  # systemd's ActiveState/SubState
    restarts: int | None
    up: bool | None  # Prometheus's `up` (None: monitoring off)
    memory_kind: str  # "GPU" or "RSS"
    memory_bytes: float | None
    planned_bytes: float | None
    # GPU hosts: the GPUs (indices) the plan put it on.
    gpus: list[int] = field(default_factory=list)
    kv_usage: float | None = None
    running: float | None = None
    waiting: float | None = None
    prompt_tps: float | None = None
    gen_tps: float | None = None
    ttft_p50_s: float | None = None


@dataclass
class GpuStatus:
    index: str
    name: str
    used_bytes: float | None
    free_bytes: float | None
    total_bytes: float | None
    planned_bytes: float | None


@dataclass
class ClientUsage:
    """What the gateway counted for one client and model since it last (re)loaded."""

    client: str
    model: str
    requests: float
    prompt_tokens: float
    completion_tokens: float


@dataclass
class HostStatus:
    host: str
    source: str  # where the numbers come from: "prometheus" or "/metrics"
    services: list[ServiceStatus] = field(default_factory=list)
    gpus: list[GpuStatus] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    usage: list[ClientUsage] = field(default_factory=list)
    error: str | None = None

    @property
    def healthy(self) -> bool:
        """Reachable, every service active (and scraped), no alert firing."""
        return (
            self.error is None
            and not self.alerts
            and all(s.active.startswith("active") and s.up is not False for s in self.services)
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "healthy": self.healthy}


def queries(host: str) -> dict[str, str]:
    """The PromQL the probe asks Prometheus, per key."""
    sel = f'job="{JOB_VLLM}", host="{host}"'
    rate = "[1m]"
    return {
        "up": f"up{{{sel}}}",
        "kv": f"max by (service) ({KV_USAGE}{{{sel}}})",
        "running": f"sum by (service) ({RUNNING}{{{sel}}})",
        "waiting": f"sum by (service) ({WAITING}{{{sel}}})",
        "prompt_tps": f"sum by (service) (rate({PROMPT_TOKENS}{{{sel}}}{rate}))",
        "gen_tps": f"sum by (service) (rate({GEN_TOKENS}{{{sel}}}{rate}))",
        "ttft": f"histogram_quantile(0.5, sum by (service, le) "
        f"(rate({TTFT}_bucket{{{sel}}}{rate})))",
        "gpu_service": f'sum by (service) ({ge.PROCESS_MEMORY}{{host="{host}"}})',
        "gpu_used": f'{ge.MEMORY_USED}{{host="{host}"}}',
        "gpu_free": f'{ge.MEMORY_FREE}{{host="{host}"}}',
        "gpu_total": f'{ge.MEMORY_TOTAL}{{host="{host}"}}',
        "alerts": f'ALERTS{{alertstate="firing", host="{host}"}}',
        **{
            f"usage_{what}": f'sum by (client, model) ({metric}{{host="{host}"}})'
            for what, metric in USAGE_METRICS.items()
        },
    }


def _vector(answer: dict[str, Any]) -> list[tuple[dict[str, str], float]]:
    if answer.get("status") != "success":
        return []
    return [(r["metric"], float(r["value"][1])) for r in answer["data"]["result"]]


def _by(answer: dict[str, Any], label: str) -> dict[str, float]:
    """One number per label value; NaN (a rate over no requests) is no number."""
    return {m.get(label, ""): v for m, v in _vector(answer) if not math.isnan(v)}


def _planned(plan: AppliedPlan, name: str) -> float | None:
    svc = plan.services[name]
    if plan.gpu:
        return plan.service_planned_bytes(name)
    return svc.cpu_kv_cache_gib * GIB if svc.cpu_kv_cache_gib else None


def _base(host: str, plan: AppliedPlan, units: dict[str, Any]) -> list[ServiceStatus]:
    """What systemd says of each planned service, memory as RSS until a GPU figure comes."""
    found = []
    for name in plan.services:
        unit = units.get(name, {})
        restarts = unit.get("NRestarts", "")
        found.append(
            ServiceStatus(
                name=name,
                active=f"{unit.get('ActiveState', '?')}/{unit.get('SubState', '?')}",
                restarts=int(restarts) if str(restarts).isdigit() else None,
                up=None,
                memory_kind="GPU" if plan.gpu else "RSS",
                memory_bytes=None if plan.gpu else unit.get("rss_bytes"),
                planned_bytes=_planned(plan, name),
                gpus=list(plan.services[name].gpus),
            )
        )
    return found


def from_prometheus(host: str, plan: AppliedPlan, probe: dict[str, Any]) -> HostStatus:
    status = HostStatus(host, "prometheus", _base(host, plan, probe["units"]))
    q = probe["queries"]
    errors = {a.get("error") for a in q.values() if a.get("status") != "success"}
    if errors:
        status.error = f"Prometheus did not answer: {sorted(map(str, errors))[0]}"
    up, gpu_service = _by(q["up"], "service"), _by(q["gpu_service"], "service")
    for svc in status.services:
        svc.up = bool(up[svc.name]) if svc.name in up else False
        svc.kv_usage = _by(q["kv"], "service").get(svc.name)
        svc.running = _by(q["running"], "service").get(svc.name)
        svc.waiting = _by(q["waiting"], "service").get(svc.name)
        svc.prompt_tps = _by(q["prompt_tps"], "service").get(svc.name)
        svc.gen_tps = _by(q["gen_tps"], "service").get(svc.name)
        svc.ttft_p50_s = _by(q["ttft"], "service").get(svc.name)
        if plan.gpu:
            svc.memory_bytes = gpu_service.get(svc.name)
    used, free, total = (_by(q[k], "gpu") for k in ("gpu_used", "gpu_free", "gpu_total"))
    names = {m.get("gpu", ""): m.get("name", "") for m, _ in _vector(q["gpu_total"])}
    status.gpus = [
        GpuStatus(i, names[i], used.get(i), free.get(i), total.get(i), _gpu_plan(plan, i))
        for i in sorted(total, key=_index)
    ]
    status.alerts = sorted(
        f"{m.get('alertname')}{' ' + m['service'] if m.get('service') else ''}"
        for m, _ in _vector(q["alerts"])
    )
    counted = {what: _by_pair(q[f"usage_{what}"]) for what in USAGE_METRICS}
    status.usage = [
        ClientUsage(client, model, *(counted[what].get((client, model), 0.0) for what in counted))
        for client, model in sorted(counted["requests"])
    ]
    return status


def _by_pair(answer: dict[str, Any]) -> dict[tuple[str, str], float]:
    return {(m.get("client", ""), m.get("model", "")): v for m, v in _vector(answer)}


def _index(gpu: str) -> int:
    """A GPU's index from its label; GPU 10 after GPU 9."""
    return int(gpu) if gpu.isdigit() else -1


def _gpu_plan(plan: AppliedPlan, gpu: str) -> float | None:
    """What the plan gives the units on this GPU (None: a GPU the plan does not know)."""
    return plan.gpu_planned_bytes(_index(gpu))


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _p50(buckets: Iterable[tuple[float, float]]) -> float | None:
    """The median from cumulative (le, count) buckets, linear within a bucket (as
    Prometheus's histogram_quantile does); over the process's whole life."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] == 0:
        return None
    rank, lower, below = ordered[-1][1] / 2, 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = le, count
    return None


def _from_metrics_text(svc: ServiceStatus, text: str) -> None:
    samples = _samples(text)
    values: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for name, labels, value in samples:
        if name in (KV_USAGE, RUNNING, WAITING):
            values[name] = (
                max(values.get(name, 0.0), value)
                if name == KV_USAGE
                else (values.get(name, 0.0) + value)
            )
        elif name == f"{TTFT}_bucket":
            le = float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + value
    svc.kv_usage, svc.running, svc.waiting = (values.get(k) for k in (KV_USAGE, RUNNING, WAITING))
    svc.ttft_p50_s = _p50(buckets.items())


def from_metrics(host: str, plan: AppliedPlan, probe: dict[str, Any]) -> HostStatus:
    """Monitoring off: each service's /metrics now (no rates: tokens/s stay empty) and
    nvidia-smi for the GPU."""
    status = HostStatus(host, "/metrics", _base(host, plan, probe["units"]))
    for svc in status.services:
        got = probe["metrics"].get(svc.name, {})
        if "text" in got:
            _from_metrics_text(svc, got["text"])
    smi = probe.get("smi", {})
    if plan.gpu and smi.get("gpus", {}).get("rc") == 0:
        gpus = NvidiaGpus().process(smi["gpus"]["out"].splitlines())
        apps = NvidiaComputeApps().process(smi.get("apps", {}).get("out", "").splitlines())
        for svc in status.services:
            pids = set(probe["units"].get(svc.name, {}).get("pids", []))
            svc.memory_bytes = sum(a["used_memory_bytes"] or 0 for a in apps if a["pid"] in pids)
        status.gpus = [
            GpuStatus(
                str(g["index"]),
                g["name"],
                g["memory_used_bytes"],
                g["memory_free_bytes"],
                g["memory_total_bytes"],
                _gpu_plan(plan, str(g["index"])),
            )
            for g in gpus
        ]
    return status


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f} GiB"


def _num(value: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _memory(s: ServiceStatus, several: bool) -> str:
    """Used against planned; on a host of several GPUs, GPU memory names the service's GPUs."""
    if s.memory_kind != "GPU":
        return f"RSS {_gib(s.memory_bytes)} (KV {_gib(s.planned_bytes)})"
    kind = f"GPU {','.join(map(str, s.gpus))}" if several and s.gpus else "GPU"
    return f"{kind} {_gib(s.memory_bytes)} / {_gib(s.planned_bytes)}"


def _service_row(s: ServiceStatus, several: bool) -> list[str]:
    state = s.active if s.up is not False else f"{s.active} (not scraped)"
    return [
        s.name,
        state,
        _num(s.restarts),
        _memory(s, several),
        _num(None if s.kv_usage is None else s.kv_usage * 100, "{:.1f}%"),
        f"{_num(s.running)}/{_num(s.waiting)}",
        f"{_num(s.prompt_tps, '{:.1f}')}/{_num(s.gen_tps, '{:.1f}')}",
        _num(None if s.ttft_p50_s is None else s.ttft_p50_s * 1000, "{:.0f} ms"),
    ]


HEADINGS = [
    "service",
    "state",
    "restarts",
    "memory used / plan",
    "KV",
    "run/wait",
    "tok/s in/out",
    "p50 TTFT",
]


def render(status: HostStatus) -> str:
    """One screen for one host, readable at a glance."""
    lines = [f"== {status.host} (from {status.source}) =="]
    if status.error:
        lines.append(f"!! {status.error}")
    several = len(status.gpus) > 1
    rows = [HEADINGS, *(_service_row(s, several) for s in status.services)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADINGS))]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    for g in status.gpus:
        lines.append(
            f"GPU {g.index} {g.name}: used {_gib(g.used_bytes)}, free {_gib(g.free_bytes)} of "
            f"{_gib(g.total_bytes)}; services' plan {_gib(g.planned_bytes)}"
        )
    if status.source == "prometheus":
        lines.append(f"alerts firing: {', '.join(status.alerts) if status.alerts else 'none'}")
    if status.usage:
        lines.append("gateway usage since its last (re)load: client model requests tokens in/out")
        lines += [
            f"  {u.client} {u.model} {u.requests:.0f} {u.prompt_tokens:.0f}/"
            f"{u.completion_tokens:.0f}"
            for u in status.usage
        ]
    return "\n".join(lines)
