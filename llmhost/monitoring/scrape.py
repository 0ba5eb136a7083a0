"""What Prometheus scrapes on one host, from the applied plan: targets, ``prometheus.yml`` and
the scrape-config file for a user's own Prometheus (pure: no pyinfra).

Every series gets ``host`` (the inventory name) from its target; the services' series also get
``service``. The GPU exporter's per-process series carry their own ``service`` (from the
process's cgroup), so its targets set none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from llmhost.applied_plan import AppliedPlan
from llmhost.layout import GATEWAY_USAGE_PATH, Layout, url_host
from llmhost.settings import Settings

# Job names: the rules, the checks and `llmhost status` select series by them.
JOB_VLLM = "llmhost-vllm"
JOB_NODE = "node"
JOB_GPU = "llmhost-gpu"
JOB_PROMETHEUS = "prometheus"
# The gateway's HAProxy exporter (issue 11) and its token counters (gateway.lua): the deploy
# passes Targets with these jobs.
JOB_GATEWAY = "llmhost-gateway"
JOB_GATEWAY_USAGE = "llmhost-gateway-usage"
HEADER = "# Managed by llmhost (pyinfra); edits are overwritten on the next deploy.\n"


@dataclass(frozen=True)
class Target:
    job: str
    address: str  # host:port as Prometheus reaches it
    labels: dict[str, str] = field(default_factory=dict)
    metrics_path: str = "/metrics"


def gateway_targets(host: str, address: str) -> list[Target]:
    """The gateway's HAProxy Prometheus exporter (``Layout.gateway_metrics_address``) and its
    token counters, for ``targets(extra=...)``."""
    labels = {"host": host, "service": "gateway"}
    return [
        Target(JOB_GATEWAY, address, labels),
        Target(JOB_GATEWAY_USAGE, address, labels, GATEWAY_USAGE_PATH),
    ]


def targets(
    settings: Settings, plan: AppliedPlan, host: str, extra: Sequence[Target] = ()
) -> list[Target]:
    """Everything to scrape on ``host``: both services, the exporters this host runs, ``extra``.

    In ``"export"`` mode only the services (and ``extra``): llmhost runs no exporter there."""
    layout = Layout(settings)
    found = [
        Target(JOB_VLLM, f"{url_host(svc.bind_host)}:{svc.port}", {"host": host, "service": name})
        for name, svc in plan.services.items()
    ]
    if settings.monitoring is True:
        ours = [(JOB_PROMETHEUS, settings.prometheus_port), (JOB_NODE, settings.node_exporter_port)]
        if plan.gpu:
            ours.append((JOB_GPU, settings.gpu_exporter_port))
        found += [Target(job, layout.monitoring_address(p), {"host": host}) for job, p in ours]
    return [*found, *extra]


def scrape_configs(found: Sequence[Target]) -> list[dict[str, Any]]:
    """One scrape job per job name, in first-seen order, one static config per target."""
    jobs: dict[str, dict[str, Any]] = {}
    for target in found:
        job = jobs.setdefault(
            target.job,
            {"job_name": target.job, "metrics_path": target.metrics_path, "static_configs": []},
        )
        job["static_configs"].append({"targets": [target.address], "labels": dict(target.labels)})
    return list(jobs.values())


def prometheus_config(settings: Settings, found: Sequence[Target], rules_path: str) -> str:
    """The host's whole ``prometheus.yml``."""
    interval = f"{settings.monitoring_interval_s}s"
    doc = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [rules_path],
        "scrape_configs": scrape_configs(found),
    }
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120)


def export_config(found: Sequence[Target]) -> str:
    """For ``llmhost_monitoring = "export"``: the jobs to add under ``scrape_configs:``."""
    return (
        HEADER
        + "# Add these jobs to your Prometheus's scrape_configs, and the rules file beside this\n"
        + "# one to its rule_files.\n"
        + yaml.safe_dump({"scrape_configs": scrape_configs(found)}, sort_keys=False, width=120)
    )
