"""GPU memory against the applied plan (nvidia-smi on the host); skipped on gpu: false hosts."""

from __future__ import annotations

import pytest
from targets import HostTarget, ServiceTarget, fail_on

from llmhost.observe.checks import (
    GIB,
    apps_of,
    driver_problems,
    foreign_gpu_problems,
    gib,
    gpu_total_problems,
    plan_gpu_problems,
    service_gpu_problems,
)

pytestmark = pytest.mark.gpu


def _require_gpu(target: HostTarget) -> None:
    if not target.settings.gpu:
        pytest.skip(f"{target.name}: llmhost_gpu is false, no GPU to check")


def test_driver(target: HostTarget) -> None:
    _require_gpu(target)
    fail_on(driver_problems(target.name, target.gpus(), target.settings.min_nvidia_driver))


def test_plan_matches_gpu(target: HostTarget) -> None:
    _require_gpu(target)
    fail_on(plan_gpu_problems(target.name, target.gpus(), target.plan.gpus))


def test_gpu_memory(service: ServiceTarget, gpu_tolerance: int, report: list[str]) -> None:
    """On each of its planned GPUs within its share of it, and on no other GPU."""
    target = service.target
    _require_gpu(target)
    apps = apps_of(target.compute_apps(), service.pids())
    planned = service.planned
    fraction = planned.gpu_memory_utilization
    report.append(
        f"{service.where}: GPU memory {gib(sum(a['used_memory_bytes'] or 0 for a in apps))} "
        f"on GPU {', '.join(str(i) for i in planned.gpus) or '-'}, plan {fraction or 0:.2f} of "
        f"each = {gib(target.plan.service_planned_bytes(service.name) or 0)} "
        f"(PIDs {', '.join(str(a['pid']) for a in apps) or 'none on a GPU'})"
    )
    fail_on(
        service_gpu_problems(
            service.where, apps, target.gpus(), planned.gpus, fraction, gpu_tolerance
        )
    )


def test_gpu_memory_total(target: HostTarget, gpu_tolerance: int, report: list[str]) -> None:
    """Each GPU a service is planned on: in use within its services' plans, headroom free."""
    _require_gpu(target)
    headroom = int(target.settings.gpu_headroom_gib * GIB)
    found = {gpu["index"]: gpu for gpu in target.gpus()}
    problems = []
    # A planned GPU nvidia-smi does not list is test_plan_matches_gpu's failure.
    for gpu in (found[g.index] for g in target.plan.used_gpus() if g.index in found):
        planned = target.plan.gpu_fraction(gpu["index"])
        on_it = ", ".join(svc.name for svc in target.plan.on_gpu(gpu["index"]))
        report.append(
            f"{target.name}: GPU {gpu['index']} ({gpu['name']}, driver {gpu['driver_version']}) "
            f"used {gib(gpu['memory_used_bytes'] or 0)}, free {gib(gpu['memory_free_bytes'] or 0)}"
            f" of {gib(gpu['memory_total_bytes'] or 0)}; plan {planned:.2f} of it ({on_it}), "
            f"headroom {gib(headroom)}"
        )
        problems += gpu_total_problems(target.name, gpu, planned, gpu_tolerance, headroom)
    fail_on(problems)


def test_no_foreign_gpu_processes(target: HostTarget) -> None:
    _require_gpu(target)
    fail_on(foreign_gpu_problems(target.name, target.compute_apps(), target.all_service_pids()))
