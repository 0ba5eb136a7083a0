"""The GPU exporter: per-GPU memory, utilisation, temperature and power, and each process's GPU
memory labelled with the llmhost service it belongs to, on ``/metrics`` for Prometheus.

Runs ON a GPU host as ``llmhost-gpu-exporter.service`` (``python gpu_exporter.py --port N``),
from the release venv, whose vLLM brings prometheus-client and NVML bindings (its own copy, see
``nvml``). It is copied to the host as one file, so it imports only the standard library,
``pynvml`` and ``prometheus_client``.
Debian has no GPU exporter and dcgm-exporter needs NVIDIA's own repository (FACTS.md).

What it reads (``read_nvml``) and what it exports (``families``) are apart: the second is a pure
function of NVML-shaped values, tested without a GPU.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

# Metric names: the alert rules, the checks and `llmhost status` import them from here.
PREFIX = "llmhost_gpu_"
MEMORY_TOTAL = f"{PREFIX}memory_total_bytes"
MEMORY_USED = f"{PREFIX}memory_used_bytes"
MEMORY_FREE = f"{PREFIX}memory_free_bytes"
UTILIZATION = f"{PREFIX}utilization_ratio"
TEMPERATURE = f"{PREFIX}temperature_celsius"
POWER = f"{PREFIX}power_watts"
PROCESS_MEMORY = f"{PREFIX}process_memory_used_bytes"
UP = f"{PREFIX}nvml_up"
GPU_LABELS = ("gpu", "uuid", "name")
# An llmhost service's unit in a cgroup path: .../system.slice/llmhost-coder.service
# (layout.unit_name writes the name; this file cannot import llmhost): a service's name, up to
# 31 characters, or a replica's (``general-2``, up to ``-16`` more).
UNIT_RE = re.compile(r"/llmhost-([a-z][a-z0-9-]{0,33})\.service(?:/|$)")


@functools.cache
def nvml() -> ModuleType:
    """NVML's Python bindings: nvidia-ml-py's ``pynvml``, else the copy vLLM vendors
    (``vllm/third_party/pynvml.py``, plain ctypes), loaded alone: importing vLLM would import
    torch."""
    try:
        import pynvml

        return pynvml
    except ImportError:
        pass
    vllm = importlib.util.find_spec("vllm")
    locations = list(vllm.submodule_search_locations or []) if vllm else []
    path = Path(locations[0], "third_party", "pynvml.py") if locations else None
    if path is None or not path.is_file():
        raise SystemExit("gpu_exporter: no NVML bindings (pip install nvidia-ml-py)")
    spec = importlib.util.spec_from_file_location("pynvml", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # It looks itself up there while it loads (seen on a GPU host without nvidia-ml-py:
    # "KeyError: 'pynvml'" in _extractNVMLErrorsAsClasses, the exporter in a restart loop).
    sys.modules["pynvml"] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class GpuReading:
    """One GPU as NVML reports it; ``None`` where NVML does not support or withholds a value."""

    index: int
    uuid: str
    name: str
    memory_total: int
    memory_used: int
    memory_free: int
    utilization: float | None = None  # 0-1, of the last sample period
    temperature: float | None = None  # degrees C
    power: float | None = None  # watts
    # pid -> bytes used on this GPU (None: NVML withholds it, e.g. without permission).
    processes: Mapping[int, int | None] = field(default_factory=dict)


def service_of_cgroup(text: str) -> str | None:
    """The llmhost service of a process, from its ``/proc/<pid>/cgroup`` (v1 or v2 lines)."""
    for line in text.splitlines():
        match = UNIT_RE.search(line.split(":", 2)[-1])
        if match:
            return match.group(1)
    return None


def service_of_pid(pid: int, proc: str = "/proc") -> str | None:
    try:
        with open(f"{proc}/{pid}/cgroup", encoding="utf-8") as f:
            return service_of_cgroup(f.read())
    except OSError:
        # Gone meanwhile, or in another PID namespace: not one of ours as far as we can see.
        return None


def families(
    gpus: Iterable[GpuReading], service_of: Callable[[int], str | None]
) -> list[GaugeMetricFamily]:
    """The exported metric families for these readings; ``service_of`` maps a PID to its
    service (``None``: not an llmhost service; such processes are exported with ``service=""``)."""
    made = {
        MEMORY_TOTAL: GaugeMetricFamily(MEMORY_TOTAL, "GPU memory, total", labels=GPU_LABELS),
        MEMORY_USED: GaugeMetricFamily(MEMORY_USED, "GPU memory in use", labels=GPU_LABELS),
        MEMORY_FREE: GaugeMetricFamily(MEMORY_FREE, "GPU memory free", labels=GPU_LABELS),
        UTILIZATION: GaugeMetricFamily(UTILIZATION, "GPU busy share (0-1)", labels=GPU_LABELS),
        TEMPERATURE: GaugeMetricFamily(TEMPERATURE, "GPU temperature", labels=GPU_LABELS),
        POWER: GaugeMetricFamily(POWER, "GPU power draw", labels=GPU_LABELS),
        PROCESS_MEMORY: GaugeMetricFamily(
            PROCESS_MEMORY,
            "GPU memory of one process, with the llmhost service it belongs to",
            labels=(*GPU_LABELS, "pid", "service"),
        ),
    }
    for gpu in gpus:
        labels = [str(gpu.index), gpu.uuid, gpu.name]
        made[MEMORY_TOTAL].add_metric(labels, gpu.memory_total)
        made[MEMORY_USED].add_metric(labels, gpu.memory_used)
        made[MEMORY_FREE].add_metric(labels, gpu.memory_free)
        for name, value in (
            (UTILIZATION, gpu.utilization),
            (TEMPERATURE, gpu.temperature),
            (POWER, gpu.power),
        ):
            if value is not None:
                made[name].add_metric(labels, value)
        for pid, used in sorted(gpu.processes.items()):
            if used is not None:
                made[PROCESS_MEMORY].add_metric([*labels, str(pid), service_of(pid) or ""], used)
    return list(made.values())


def _optional(read: Callable[[], float]) -> float | None:
    """A value NVML may not support on this GPU (power on some boards, utilisation on MIG)."""
    try:
        return read()
    except nvml().NVMLError:
        return None


def _processes(handle: Any) -> dict[int, int | None]:
    found: dict[int, int | None] = {}
    for proc in nvml().nvmlDeviceGetComputeRunningProcesses(handle):
        used = proc.usedGpuMemory
        # NVML says "not available" with None (or 2**64-1 in older bindings).
        found[proc.pid] = used if used is not None and used < 2**63 else None
    return found


def read_nvml() -> list[GpuReading]:
    """Every GPU NVML sees (``nvmlInit`` must have been called)."""
    pynvml = nvml()
    readings = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        name = pynvml.nvmlDeviceGetName(handle)
        uuid = pynvml.nvmlDeviceGetUUID(handle)
        readings.append(
            GpuReading(
                index=index,
                uuid=uuid.decode() if isinstance(uuid, bytes) else uuid,
                name=name.decode() if isinstance(name, bytes) else name,
                memory_total=memory.total,
                memory_used=memory.used,
                memory_free=memory.free,
                utilization=_optional(
                    lambda h=handle: pynvml.nvmlDeviceGetUtilizationRates(h).gpu / 100
                ),
                temperature=_optional(
                    lambda h=handle: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
                ),
                power=_optional(lambda h=handle: pynvml.nvmlDeviceGetPowerUsage(h) / 1000),
                processes=_processes(handle),
            )
        )
    return readings


class NvmlCollector(Collector):
    """Reads NVML at each scrape; ``nvml_up`` 0 (and nothing else) when the read fails."""

    def __init__(
        self,
        read: Callable[[], list[GpuReading]],
        service_of: Callable[[int], str | None],
    ) -> None:
        self.read = read
        self.service_of = service_of

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(UP, "1 when NVML answered this scrape")
        try:
            readings = self.read()
        except Exception as e:  # any NVML failure: report it as a metric, keep serving
            print(f"gpu_exporter: NVML read failed: {e}", file=sys.stderr, flush=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families(readings, self.service_of)


def service_pid_pairs(values: Iterable[str], option: str) -> list[tuple[str, int]]:
    """``SERVICE=PID`` items (``coder=844``), where there is no systemd to ask: the one parser
    of the exporter's ``--service-pid`` and the post-deploy checks' ``--service-pids``."""
    pairs = []
    for value in filter(None, (v.strip() for v in values)):
        name, sep, pid = (part.strip() for part in value.partition("="))
        if not sep or not pid.isdigit() or not name:
            raise ValueError(f"{option} {value!r}: write SERVICE=PID, e.g. coder=844")
        pairs.append((name, int(pid)))
    return pairs


def parse_service_pids(values: Iterable[str]) -> dict[int, str]:
    """``--service-pid coder=844`` (repeatable): PID -> service."""
    return {pid: name for name, pid in service_pid_pairs(values, "--service-pid")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument(
        "--service-pid",
        action="append",
        default=[],
        help="SERVICE=PID: label this PID's memory with SERVICE instead of asking its cgroup",
    )
    args = parser.parse_args(argv)
    try:
        given = parse_service_pids(args.service_pid)
    except ValueError as e:
        parser.error(str(e))
    from prometheus_client import start_http_server

    pynvml = nvml()
    pynvml.nvmlInit()
    registry = CollectorRegistry()
    registry.register(NvmlCollector(read_nvml, lambda pid: given.get(pid) or service_of_pid(pid)))
    start_http_server(args.port, addr=args.bind, registry=registry)
    print(f"gpu_exporter: serving on {args.bind}:{args.port}/metrics", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    pynvml.nvmlShutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
