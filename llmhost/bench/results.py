"""``llmhost bench``'s numbers from the driver's raw records (pure): per case and service the
latency percentiles, throughput, goodput against the service's targets and the host's side;
the JSON document, the gateway's added latency, and the terminal table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from statistics import fmean
from typing import Any

from llmhost.bench.cases import ALONE, CO_LOADED, DIRECT, GATEWAY
from llmhost.observe.checks import percentile
from llmhost.settings import Slo

# The driver's record of one request: [ok, ttft_s, e2el_s, output tokens, gaps in ms, error].
OK, TTFT, E2EL, TOKENS, ITL, ERROR = range(6)


@dataclass
class Spread:
    """p50 and p99 (nearest rank) of one latency, in milliseconds."""

    p50: float
    p99: float

    @classmethod
    def of(cls, values_ms: list[float]) -> Spread | None:
        if not values_ms:
            return None
        return cls(round(percentile(values_ms, 50), 2), round(percentile(values_ms, 99), 2))


@dataclass
class Metrics:
    """One service in one case."""

    requests: int
    completed: int
    failures: int
    ttft_ms: Spread | None
    # Every gap between tokens, and each request's mean gap (what the target holds).
    itl_ms: Spread | None
    tpot_ms: Spread | None
    e2el_ms: Spread | None
    output_tokens_per_s: float
    requests_per_s: float
    # Requests per second that met the service's targets, and their share of the requests.
    goodput_rps: float
    slo_met: float
    restarts: int
    kv_cache_peak: float
    preemptions: int
    errors: list[str] = field(default_factory=list)
    journal: list[str] = field(default_factory=list)


def meets(record: list[Any], slo: Slo) -> bool:
    """Answered, its first token within ``ttft_ms`` and its mean gap between tokens within
    ``itl_ms`` (a one-token answer has no gap)."""
    gaps = record[ITL]
    return bool(
        record[OK]
        and record[TTFT] * 1000 <= slo.ttft_ms
        and (not gaps or fmean(gaps) <= slo.itl_ms)
    )


def metrics(raw: dict[str, Any], slo: Slo) -> Metrics:
    """A service's numbers in one case from the driver's answer for it."""
    records = raw["requests"]
    ok = [r for r in records if r[OK]]
    elapsed = max(raw["elapsed_s"], 1e-9)
    good = sum(meets(r, slo) for r in records)
    before, after = raw["restarts"]
    return Metrics(
        requests=len(records),
        completed=len(ok),
        failures=len(records) - len(ok),
        ttft_ms=Spread.of([r[TTFT] * 1000 for r in ok]),
        itl_ms=Spread.of([gap for r in ok for gap in r[ITL]]),
        tpot_ms=Spread.of([fmean(r[ITL]) for r in ok if r[ITL]]),
        e2el_ms=Spread.of([r[E2EL] * 1000 for r in ok]),
        output_tokens_per_s=round(sum(r[TOKENS] or 0 for r in ok) / elapsed, 2),
        requests_per_s=round(len(ok) / elapsed, 3),
        goodput_rps=round(good / elapsed, 3),
        slo_met=round(good / len(records), 3) if records else 0.0,
        restarts=_int(after) - _int(before),
        kv_cache_peak=round(raw["kv_cache_peak"], 4),
        preemptions=round(raw["preemptions"]),
        errors=sorted({r[ERROR] for r in records if not r[OK]})[:3],
        journal=raw["journal"],
    )


def _int(value: str) -> int:
    return int(value) if str(value).isdigit() else 0


def added_ms(through: Metrics, direct: Metrics) -> dict[str, float | None]:
    """What the gateway adds at p50 (through minus direct, same load)."""

    def diff(a: Spread | None, b: Spread | None) -> float | None:
        return None if a is None or b is None else round(a.p50 - b.p50, 2)

    return {
        "ttft_p50": diff(through.ttft_ms, direct.ttft_ms),
        "e2el_p50": diff(through.e2el_ms, direct.e2el_ms),
    }


@dataclass
class Report:
    """A whole run: each service's metrics by load (alone, co-loaded) and path."""

    host: str
    duration_s: float
    slo: dict[str, Slo]
    workload: dict[str, dict[str, int]]
    found: dict[str, dict[str, dict[str, Metrics]]]
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, host: str, spec: dict[str, Any], answer: dict[str, Any], slo: dict[str, Slo],
           notes: list[str]) -> Report:  # fmt: skip
        found: dict[str, dict[str, dict[str, Metrics]]] = {}
        for case in answer["cases"]:
            for name, raw in case["services"].items():
                per_load = found.setdefault(name, {}).setdefault(case["load"], {})
                per_load[case["via"]] = metrics(raw, slo[name])
        workload = {
            name: {k: svc[k] for k in ("prompt_tokens", "output_tokens", "request_rate")}
            | {"concurrency": svc["targets"][DIRECT]["concurrency"]}
            for name, svc in spec["services"].items()
        }
        return cls(host, spec["duration_s"], slo, workload, found, notes)

    def gateway_added(self, name: str) -> dict[str, dict[str, float | None]]:
        return {
            load: added_ms(vias[GATEWAY], vias[DIRECT])
            for load, vias in self.found[name].items()
            if GATEWAY in vias and DIRECT in vias
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "duration_s": self.duration_s,
            "services": {
                name: {
                    "slo": self.slo[name].model_dump(),
                    "workload": self.workload[name],
                    **{
                        load: {via: asdict(m) for via, m in vias.items()}
                        for load, vias in loads.items()
                    },
                    "gateway_added_ms": self.gateway_added(name),
                }
                for name, loads in self.found.items()
            },
            "notes": self.notes,
        }

    def rows(self) -> list[tuple[str, str, str, Metrics]]:
        return [
            (name, load, via, loads[load][via])
            for name, loads in self.found.items()
            for load in (ALONE, CO_LOADED)
            if load in loads
            for via in (DIRECT, GATEWAY)
            if via in loads[load]
        ]
