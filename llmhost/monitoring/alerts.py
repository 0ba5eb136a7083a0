"""Prometheus alert rules for one host, generated from its applied plan and its thresholds
(``llmhost_alert_*``; pure: no pyinfra). ``promtool test rules`` covers each alert both ways
(tests/unit/test_alerts.py).

The GPU limits are the plan's own numbers, per GPU: a service's ``gpu_memory_utilization`` x
the total of each GPU it was planned on, and the sum of its services' on each GPU, plus the
tolerance; so a re-plan moves the alerts with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from llmhost.applied_plan import AppliedGpu, AppliedPlan
from llmhost.monitoring import gpu_exporter
from llmhost.monitoring.scrape import HEADER, JOB_VLLM, Target
from llmhost.settings import Settings

GROUP = "llmhost"
MIB = 1024 * 1024
GIB = 1024 * MIB
VLLM = f'job="{JOB_VLLM}"'
# vLLM's own metric names (vLLM's /metrics; `model_name` comes from --served-model-name).
KV_USAGE = "vllm:kv_cache_usage_perc"
WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
# prometheus-client's process collector in vLLM's API server: a new value is a new process.
START_TIME = "process_start_time_seconds"
# How a summary names a GPU, from the GPU exporter's labels.
GPU_NAME = "{{ $labels.name }}, {{ $labels.uuid }}"


def _rule(
    name: str, expr: str, for_s: int, severity: str, summary: str, **labels: str
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": f"{for_s}s",
        "labels": {"severity": severity, **labels},
        "annotations": {"summary": summary},
    }


def service_rules(settings: Settings) -> list[dict[str, Any]]:
    """What each vLLM service's own /metrics tells: down, restarted, KV cache full, queueing."""
    s = settings
    return [
        _rule(
            "LLMServiceDown",
            f"up{{{VLLM}}} == 0",
            s.alert_down_for_s,
            "critical",
            "{{ $labels.host }}: {{ $labels.service }} has not answered /metrics for "
            f"{s.alert_down_for_s} s",
        ),
        _rule(
            "LLMServiceRestarted",
            # The last start time seen (held across the scrapes a restart misses, as long as
            # a start may take) changed within the window: a plain changes() over the window
            # misses a restart whose downtime is longer than the window.
            f"changes(last_over_time({START_TIME}{{{VLLM}}}"
            f"[{s.alert_restart_window_s + s.health_timeout_s}s])"
            f"[{s.alert_restart_window_s}s:{s.monitoring_interval_s}s]) > 0",
            0,
            "warning",
            "{{ $labels.host }}: {{ $labels.service }} restarted in the last "
            f"{s.alert_restart_window_s} s",
        ),
        _rule(
            "LLMKVCacheFull",
            f"{KV_USAGE}{{{VLLM}}} > {s.alert_kv_cache_usage}",
            s.alert_kv_cache_for_s,
            "warning",
            "{{ $labels.host }}: {{ $labels.service }} KV cache {{ $value | humanizePercentage }} "
            f"full for {s.alert_kv_cache_for_s} s",
        ),
        _rule(
            "LLMRequestsQueued",
            f"{WAITING}{{{VLLM}}} > 0",
            s.alert_waiting_for_s,
            "warning",
            "{{ $labels.host }}: {{ $labels.service }} has had requests waiting for "
            f"{s.alert_waiting_for_s} s ({{{{ $value }}}} now)",
        ),
    ]


def gpu_rules(settings: Settings, plan: AppliedPlan) -> list[dict[str, Any]]:
    """GPU memory against the plan, per GPU a service is planned on (GPU hosts: the GPU
    exporter's series, whose ``gpu`` label is NVML's index: PCI bus order, as nvidia-smi's
    and so the plan's are)."""
    used = plan.used_gpus() if plan.gpu else []
    if not used:
        return []
    rules = [rule for gpu in used for rule in _gpu_rules(settings, plan, gpu)]
    return [*rules, _headroom_rule(settings, [gpu.index for gpu in used])]


def _gpu_rules(s: Settings, plan: AppliedPlan, gpu: AppliedGpu) -> list[dict[str, Any]]:
    """Each unit on ``gpu`` within its fraction of it, and the GPU within its units' sum."""
    tolerance = s.alert_gpu_tolerance_mib * MIB
    over = f"+ {s.alert_gpu_tolerance_mib} MiB"
    on_gpu = f'gpu="{gpu.index}"'
    rules = []
    for svc in plan.on_gpu(gpu.index):
        fraction = svc.gpu_memory_utilization or 0
        rules.append(
            _rule(
                "LLMServiceGPUOverPlan",
                f"sum by (host, service, {', '.join(gpu_exporter.GPU_LABELS)}) "
                f'({gpu_exporter.PROCESS_MEMORY}{{service="{svc.name}", {on_gpu}}}) '
                f"> {int(fraction * gpu.total_bytes) + tolerance}",
                s.alert_gpu_for_s,
                "warning",
                f"{{{{ $labels.host }}}}: {svc.name} uses {{{{ $value | humanize1024 }}}}B "
                f"of GPU {gpu.index} ({GPU_NAME}), over its plan ({fraction:.3f} of it) {over}",
                service=svc.name,
            )
        )
    fractions = plan.gpu_fraction(gpu.index)
    rules.append(
        _rule(
            "LLMGPUOverPlan",
            f"{gpu_exporter.MEMORY_USED}{{{on_gpu}}} "
            f"> {int(fractions * gpu.total_bytes) + tolerance}",
            s.alert_gpu_for_s,
            "warning",
            f"{{{{ $labels.host }}}}: GPU {gpu.index} ({GPU_NAME}) has "
            f"{{{{ $value | humanize1024 }}}}B in use, over the plan of its services "
            f"({fractions:.3f} of it) {over}",
        )
    )
    return rules


def _headroom_rule(s: Settings, gpus: Sequence[int]) -> dict[str, Any]:
    """Free memory on the GPUs the services are planned on (another GPU is not theirs)."""
    used = "|".join(map(str, gpus))
    return _rule(
        "LLMGPUHeadroomLow",
        f'{gpu_exporter.MEMORY_FREE}{{gpu=~"{used}"}} < {int(s.gpu_headroom_gib * GIB)}',
        s.alert_gpu_for_s,
        "warning",
        f"{{{{ $labels.host }}}}: GPU {{{{ $labels.gpu }}}} ({GPU_NAME}) has "
        f"{{{{ $value | humanize1024 }}}}B free, below llmhost_gpu_headroom_gib "
        f"({s.gpu_headroom_gib} GiB)",
    )


def target_rules(settings: Settings, found: Sequence[Target]) -> list[dict[str, Any]]:
    """Exporters down, and any expected target not scraped at all (a config that lost it)."""
    rules = [
        _rule(
            "LLMTargetDown",
            f'up{{job!="{JOB_VLLM}"}} == 0',
            settings.alert_down_for_s,
            "warning",
            "{{ $labels.host }}: {{ $labels.job }} target {{ $labels.instance }} is down",
        )
    ]
    for target in found:
        selector = ", ".join(
            [f'job="{target.job}"', *(f'{k}="{v}"' for k, v in sorted(target.labels.items()))]
        )
        rules.append(
            _rule(
                "LLMTargetMissing",
                f"absent(up{{{selector}}})",
                settings.alert_down_for_s,
                "warning",
                f"{target.labels.get('host', '')}: Prometheus does not scrape {target.job} at "
                f"{target.address}",
                job=target.job,
                target=target.address,
            )
        )
    return rules


def rules(settings: Settings, plan: AppliedPlan, found: Sequence[Target]) -> dict[str, Any]:
    """The rules document: one group, evaluated at the scrape interval."""
    return {
        "groups": [
            {
                "name": GROUP,
                "interval": f"{settings.monitoring_interval_s}s",
                "rules": [
                    *service_rules(settings),
                    *gpu_rules(settings, plan),
                    *target_rules(settings, found),
                ],
            }
        ]
    }


def rules_file(settings: Settings, plan: AppliedPlan, found: Sequence[Target]) -> str:
    return HEADER + yaml.safe_dump(rules(settings, plan, found), sort_keys=False, width=120)
