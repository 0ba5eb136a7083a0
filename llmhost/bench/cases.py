"""What ``llmhost bench`` asks of a host (pure: no SSH): the cases in order, and the driver's
spec — each service's targets, workload, unit and /metrics, as the host's Layout names them."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from llmhost.layout import Layout
from llmhost.observe.checks import JOURNAL_PATTERNS
from llmhost.settings import ServiceSpec, Settings

ALONE, CO_LOADED = "alone", "co-loaded"
# ``--sweep``: the other services' load while the swept one's unit is switched, held until the
# switch is over (the driver's stdin closes), not for a duration.
HELD = "held during the switch"
DIRECT, GATEWAY = "direct", "gateway"
# Prompts sampled per service: enough that few repeat within a run (a repeat's prefill comes
# from vLLM's prefix cache), assuming up to 4 requests per second per client, capped since
# each costs the host a tokenizer round trip.
REQUESTS_PER_CLIENT_S = 4
MAX_PROMPTS = 1000
NO_CLIENT = (
    "no gateway client whose key was generated on the host and that has no limits or model list: "
    'add one to llmhost_gateway_clients (e.g. "bench": None) and deploy, or the gateway cases '
    "are left out"
)


@dataclass(frozen=True)
class Case:
    load: str  # ALONE, CO_LOADED or HELD
    via: str  # DIRECT or GATEWAY
    services: tuple[str, ...]

    @property
    def held(self) -> bool:
        return self.load == HELD

    @property
    def name(self) -> str:
        return f"{' + '.join(self.services)} {self.load} {self.via}"


def cases(services: list[str], gateway: bool) -> list[Case]:
    """Each service alone, then all at once (with more than one), each direct and then through
    the gateway (same load: what the gateway adds is the difference)."""
    vias = (DIRECT, GATEWAY) if gateway else (DIRECT,)
    loads = [(ALONE, (name,)) for name in services]
    if len(services) > 1:
        loads.append((CO_LOADED, tuple(services)))
    return [Case(load, via, names) for load, names in loads for via in vias]


def bench_client(settings: Settings) -> str | None:
    """A gateway client the bench can load through: its key on the host, no limit of its own or
    the gateway's (a 429 there would be the limit, not the service), every model allowed."""
    if not settings.gateway or settings.gateway_rate_limit is not None:
        return None
    free = [
        name
        for name, c in sorted(settings.clients.items())
        if c.key_file is None and c.models is None and c.rpm is None and c.concurrency is None
    ]
    return free[0] if free else None


def _targets(settings: Settings, svc: ServiceSpec, client: str | None) -> dict[str, Any]:
    layout = Layout(settings)
    found: dict[str, Any] = {
        DIRECT: {
            "url": layout.url(svc, "/v1/chat/completions"),
            "key_file": layout.api_key_env,
            "concurrency": svc.workload.concurrency,
        }
    }
    if client is not None:
        # Beyond a model's cap the gateway answers 429 by design: load it up to the cap.
        cap = svc.gateway_max_in_flight or svc.workload.concurrency
        found[GATEWAY] = {
            "url": f"{layout.gateway_url}/v1/chat/completions",
            "key_file": layout.gateway_key(client),
            "cafile": layout.gateway_cert
            if settings.gateway_tls and not settings.tls_cert_file
            else None,
            "concurrency": min(cap, svc.workload.concurrency),
        }
    return found


def prompt_count(svc: ServiceSpec, duration_s: float, n_cases: int) -> int:
    wanted = svc.workload.concurrency * math.ceil(duration_s) * n_cases * REQUESTS_PER_CLIENT_S
    return min(MAX_PROMPTS, wanted)


def driver_spec(
    settings: Settings,
    names: list[str],
    duration_s: float,
    client: str | None,
    run: list[Case] | None = None,
) -> dict[str, Any]:
    """The driver's one argument (``llmhost.bench.driver``): paths and numbers, no secret.
    ``run``: these cases (of ``names``) instead of every one."""
    layout = Layout(settings)
    run = run or cases(names, gateway=client is not None)
    services = {}
    for name in names:
        # A replicated service is driven straight at its first replica (the gateway balances).
        svc = settings.service(name).instances()[0]
        services[name] = {
            "model": svc.served_model_name,
            "tokenizer": layout.model_dir(svc),
            "unit": layout.unit_name(svc),
            "metrics_url": layout.url(svc, "/metrics"),
            "prompt_tokens": svc.workload.prompt_tokens,
            "output_tokens": svc.workload.output_tokens,
            "request_rate": svc.workload.request_rate,
            "targets": _targets(settings, svc, client),
        }
    n_cases = max(sum(name in c.services for c in run) for name in names)
    return {
        "duration_s": duration_s,
        "journal_pattern": JOURNAL_PATTERNS.pattern,
        "prompts_per_service": max(
            prompt_count(settings.service(n), duration_s, n_cases) for n in names
        ),
        "services": services,
        "cases": [
            {
                "name": c.name,
                "load": c.load,
                "via": c.via,
                "services": list(c.services),
                "until_stdin": c.held,
            }
            for c in run
        ],
    }


def exec_python(exec_start: str) -> str | None:
    """The python of the release venv a unit's ``ExecStart`` runs from (``systemctl show -p
    ExecStart --value``), which has vLLM's benchmark client: the executable is the venv's
    ``python`` (the lab's launcher) or its ``vllm`` script (the default, seen on the GPU host:
    running the driver with it handed the source to vLLM's CLI)."""
    found = re.search(r"\bpath=(\S+)", exec_start)
    return str(PurePosixPath(found.group(1)).with_name("python")) if found else None
