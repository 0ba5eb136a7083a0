"""GPU memory against the applied plan (nvidia-smi on the host); skipped on gpu: false hosts."""

from __future__ import annotations

import pytest
from targets import HostTarget, ServiceTarget, fail_on

from llmhost.facts.nvidia import NvidiaGpu
from llmhost.observe.checks import (
    GIB,
    apps_of,
    driver_problems,
    foreign_gpu_problems,
    gib,
    gpu_total_problems,
    plan_gpu_problems,
    service_vram_problems,
)

pytestmark = pytest.mark.gpu


def _require_gpu(target: HostTarget) -> None:
    if not target.settings.gpu:
        pytest.skip(f"{target.name}: llmhost_gpu is false, no GPU to check")


def _service_gpus(target: HostTarget) -> list[NvidiaGpu]:
    """The GPUs the services run on (all GPUs when none of their processes is on one)."""
    gpus = target.gpus()
    used = {app["gpu_uuid"] for app in apps_of(target.compute_apps(), target.all_service_pids())}
    return [gpu for gpu in gpus if gpu["uuid"] in used] or gpus


def test_driver(target: HostTarget) -> None:
    _require_gpu(target)
    fail_on(driver_problems(target.name, target.gpus(), target.settings.min_nvidia_driver))


def test_plan_matches_gpu(target: HostTarget) -> None:
    _require_gpu(target)
    fail_on(plan_gpu_problems(target.name, target.gpus(), target.plan.gpu_total_bytes))


def test_gpu_memory(service: ServiceTarget, gpu_tolerance: int, report: list[str]) -> None:
    target = service.target
    _require_gpu(target)
    apps = apps_of(target.compute_apps(), service.pids())
    gpus = {gpu["uuid"]: gpu for gpu in target.gpus()}
    # A service's share is of the GPU it runs on; GPU 0 when none of its processes is on one.
    gpu = gpus.get(apps[0]["gpu_uuid"]) if apps else next(iter(gpus.values()), None)
    total = gpu["memory_total_bytes"] if gpu else None
    if not total:
        fail_on([f"{service.where}: nvidia-smi gives no GPU memory total; is the driver loaded?"])
        return
    fraction = service.planned.gpu_memory_utilization
    report.append(
        f"{service.where}: GPU memory {gib(sum(a['used_memory_bytes'] or 0 for a in apps))}, "
        f"plan {fraction or 0:.2f} x {gib(total)} = {gib((fraction or 0) * total)} "
        f"(PIDs {', '.join(str(a['pid']) for a in apps) or 'none on the GPU'})"
    )
    fail_on(service_vram_problems(service.where, apps, fraction, total, gpu_tolerance))


def test_gpu_memory_total(target: HostTarget, gpu_tolerance: int, report: list[str]) -> None:
    _require_gpu(target)
    headroom = int(target.settings.gpu_headroom_gib * GIB)
    planned = target.plan.gpu_fraction
    problems = []
    for gpu in _service_gpus(target):
        report.append(
            f"{target.name}: GPU {gpu['index']} ({gpu['name']}, driver {gpu['driver_version']}) "
            f"used {gib(gpu['memory_used_bytes'] or 0)}, free {gib(gpu['memory_free_bytes'] or 0)}"
            f" of {gib(gpu['memory_total_bytes'] or 0)}; plan {planned:.2f} of it, headroom "
            f"{gib(headroom)}"
        )
        problems += gpu_total_problems(target.name, gpu, planned, gpu_tolerance, headroom)
    fail_on(problems)


def test_no_foreign_gpu_processes(target: HostTarget) -> None:
    _require_gpu(target)
    fail_on(foreign_gpu_problems(target.name, target.compute_apps(), target.all_service_pids()))
