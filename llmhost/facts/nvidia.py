"""NVIDIA GPU facts, parsed from ``nvidia-smi``'s machine-readable CSV, never from its tables.

Values nvidia-smi cannot give come as ``[N/A]``, ``[Not Supported]`` or ``[Insufficient
Permissions]``; they are returned as ``None`` so callers decide what an unknown means.
"""

from __future__ import annotations

from typing import TypedDict, TypeVar

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError
from typing_extensions import override

MIB = 1024 * 1024
T = TypeVar("T")

GPU_FIELDS = (
    "index",
    "uuid",
    "name",
    "memory.total",
    "memory.used",
    "memory.free",
    "compute_cap",
    "driver_version",
)
APP_FIELDS = ("pid", "gpu_uuid", "used_memory", "process_name")


def _query(kind: str, fields: tuple[str, ...]) -> str:
    return f"nvidia-smi --query-{kind}={','.join(fields)} --format=csv,noheader,nounits"


def _value(raw: str) -> str | None:
    value = raw.strip()
    # nvidia-smi brackets every value it cannot give: [N/A], [Insufficient Permissions], ...
    if not value or (value.startswith("[") and value.endswith("]")):
        return None
    return value


def _mib_to_bytes(raw: str) -> int | None:
    value = _value(raw)
    return None if value is None else int(value) * MIB


def _split(line: str, fields: tuple[str, ...], free_text: int) -> list[str]:
    """Split one CSV row whose field at index ``free_text`` may itself hold ", " (a name)."""
    head = line.split(", ", free_text)
    tail = head.pop().rsplit(", ", len(fields) - free_text - 1)
    parts = head + tail
    if len(parts) != len(fields):
        raise FactProcessError(f"expected {len(fields)} fields ({', '.join(fields)}): {line!r}")
    return parts


class NvidiaGpu(TypedDict):
    index: int
    uuid: str
    name: str
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    memory_free_bytes: int | None
    # (major, minor), e.g. (9, 0) for Hopper.
    compute_cap: tuple[int, int] | None
    driver_version: str | None


def reserved_bytes(gpu: NvidiaGpu) -> int | None:
    """What the driver keeps of the card (nvidia-smi's total - used - free), None when
    nvidia-smi withholds a figure: the rest is CUDA's total, which vLLM's fraction multiplies."""
    total, used, free = (
        gpu["memory_total_bytes"],
        gpu["memory_used_bytes"],
        gpu["memory_free_bytes"],
    )
    if total is None or used is None or free is None:
        return None
    return total - used - free


class _NvidiaSmiQuery(FactBase[list[T]]):
    """One ``nvidia-smi --query-<query>=<fields>`` CSV, empty when nvidia-smi is missing."""

    query: str
    fields: tuple[str, ...]
    default = list

    @override
    def requires_command(self) -> str:
        return "nvidia-smi"

    @override
    def command(self) -> str:
        return _query(self.query, self.fields)


class NvidiaGpus(_NvidiaSmiQuery[NvidiaGpu]):
    """
    Returns the host's NVIDIA GPUs, memory in bytes. An empty list when ``nvidia-smi`` is not
    installed; when it is but the driver is not loaded, the command fails and so does the fact.

    .. code:: python

        [
            {
                "index": 0,
                "uuid": "GPU-24c93693-1df4-8965-cd32-9f8883599a38",
                "name": "NVIDIA H200",
                "memory_total_bytes": 150754820096,
                "memory_used_bytes": 0,
                "memory_free_bytes": 150109945856,
                "compute_cap": (9, 0),
                "driver_version": "580.159.04",
            },
        ]
    """

    query = "gpu"
    fields = GPU_FIELDS

    @override
    def process(self, output: list[str]) -> list[NvidiaGpu]:
        gpus: list[NvidiaGpu] = []
        for line in output:
            if not line.strip():
                continue
            index, uuid, name, total, used, free, cap, driver = _split(line, GPU_FIELDS, 2)
            cap_value = _value(cap)
            major, _, minor = (cap_value or "").partition(".")
            gpus.append(
                {
                    "index": int(index),
                    "uuid": uuid.strip(),
                    "name": name.strip(),
                    "memory_total_bytes": _mib_to_bytes(total),
                    "memory_used_bytes": _mib_to_bytes(used),
                    "memory_free_bytes": _mib_to_bytes(free),
                    "compute_cap": (int(major), int(minor or 0)) if cap_value else None,
                    "driver_version": _value(driver),
                }
            )
        return gpus


class NvidiaComputeApp(TypedDict):
    pid: int
    gpu_uuid: str
    # None where nvidia-smi cannot tell (in some containers, without permissions).
    used_memory_bytes: int | None
    process_name: str


class NvidiaComputeApps(_NvidiaSmiQuery[NvidiaComputeApp]):
    """
    Returns the processes holding a CUDA context on any GPU, memory in bytes; empty when none
    does (or ``nvidia-smi`` is not installed).

    .. code:: python

        [
            {
                "pid": 460,
                "gpu_uuid": "GPU-24c93693-1df4-8965-cd32-9f8883599a38",
                "used_memory_bytes": 82552291328,
                "process_name": "python3",
            },
        ]
    """

    query = "compute-apps"
    fields = APP_FIELDS

    @override
    def process(self, output: list[str]) -> list[NvidiaComputeApp]:
        apps: list[NvidiaComputeApp] = []
        for line in output:
            # Older drivers print a sentence instead of an empty CSV when nothing runs.
            if not line.strip() or line.startswith("No running"):
                continue
            pid, gpu_uuid, used, name = _split(line, APP_FIELDS, 3)
            apps.append(
                {
                    "pid": int(pid),
                    "gpu_uuid": gpu_uuid.strip(),
                    "used_memory_bytes": _mib_to_bytes(used),
                    "process_name": name.strip(),
                }
            )
        return apps
