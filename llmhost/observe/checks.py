"""Host-independent logic of the post-deploy checks (``tests/host``): parse, compare, summarise.

Nothing here touches a host: the tests read a host through testinfra (``tests/host/targets.py``) and
hand the numbers to these functions, which return the problems as operator-ready sentences
(host, service, the numbers, what to look at). An empty list means the check passed.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmhost.monitoring.gpu_exporter import service_pid_pairs

if TYPE_CHECKING:
    # Types only: this module stays importable without pyinfra.
    from llmhost.applied_plan import AppliedGpu
    from llmhost.facts.nvidia import NvidiaComputeApp, NvidiaGpu

GIB = 1024**3
MIB = 1024**2

# Journal lines that mean a service ran out of memory or failed vLLM's startup memory check
# (FACTS.md); systemd logs the last two when the kernel's OOM killer hits the unit.
JOURNAL_PATTERNS = re.compile(
    r"out of memory|CUDA error|Free memory on device|OOM killer|oom-kill", re.IGNORECASE
)


def gib(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.2f} GiB"


def version_at_least(found: str, minimum: str) -> bool:
    """The one reading of a driver version (preflight's and the checks'): numeric, part by part
    (580.159.04 >= 580.65.06, which a string compare gets wrong)."""

    def parts(version: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", version))

    return parts(found) >= parts(minimum)


def parse_systemctl_show(text: str) -> dict[str, str]:
    """``systemctl show -p A -p B UNIT`` output (``A=value`` lines) as a dict."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    return props


def parse_service_pids(spec: str) -> dict[str, list[int]]:
    """``coder=101,general=202,general=203`` → {"coder": [101], "general": [202, 203]}."""
    pids: dict[str, list[int]] = {}
    for name, pid in service_pid_pairs(spec.split(","), "--service-pids"):
        pids.setdefault(name, []).append(pid)
    return pids


def journal_problems(lines: Iterable[str]) -> list[str]:
    return [line for line in lines if JOURNAL_PATTERNS.search(line)]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def listener_problems(
    where: str,
    listeners: Iterable[tuple[str, int]],
    bind_host: str,
    port: int,
    wildcard_firewalled: bool = False,
) -> list[str]:
    """The service must listen on bind_host:port and on no other address reachable off-host.

    Loopback listeners besides the planned one are allowed: vLLM's engine keeps internal
    sockets (torch.distributed, gloo) that are harmless on 127.0.0.1. Seen on the lab: without
    GLOO_SOCKET_IFNAME=lo, gloo binds a dozen ports per engine to the host's own address. Seen
    on the GPU host with vLLM 0.25.0: its TCPStore on every address (":::58511"), which later
    releases replaced with a FileStore.
    """
    planned = (ipaddress.ip_address(bind_host), port)
    found = sorted({(ipaddress.ip_address(addr), p) for addr, p in listeners}, key=str)
    problems = []
    if planned not in found:
        problems.append(
            f"{where}: not listening on {bind_host}:{port} (plan.json); its TCP listeners: "
            f"{', '.join(f'{a}:{p}' for a, p in found) or 'none'}"
        )
    # Another port on every address, which the operator's firewall holds: a vLLM whose
    # TCPStore binds so (llmhost_vllm_tcpstore_firewalled). Never the API's own port.
    kept = ("0.0.0.0", "::") if wildcard_firewalled else ()
    exposed = [
        f"{a}:{p}"
        for a, p in found
        if (a, p) != planned and not _is_loopback(str(a)) and not (str(a) in kept and p != port)
    ]
    if exposed:
        problems.append(
            f"{where}: also listening on {', '.join(exposed)}, reachable beyond the planned "
            f"{bind_host}:{port}; for the API port check --host; for vLLM's internal ports "
            "set GLOO_SOCKET_IFNAME=lo in the env file (gloo); a wildcard port of vLLM 0.27 or "
            "older is PyTorch's TCPStore (vLLM #52638): pin 0.28.0 or later, or firewall it and "
            "set llmhost_vllm_tcpstore_firewalled"
        )
    return problems


# --- GPU memory against the plan ------------------------------------------------------------


def apps_of(apps: Iterable[NvidiaComputeApp], pids: Iterable[int]) -> list[NvidiaComputeApp]:
    wanted = set(pids)
    return [app for app in apps if app["pid"] in wanted]


def gpu_label(gpu: NvidiaGpu) -> str:
    """How the checks name a GPU: ``GPU 1 (NVIDIA L40S, GPU-...)``."""
    return f"GPU {gpu['index']} ({gpu['name']}, {gpu['uuid']})"


def service_gpu_problems(
    where: str,
    service_apps: Sequence[NvidiaComputeApp],
    gpus: Sequence[NvidiaGpu],
    planned: Sequence[int],
    fraction: float | None,
    tolerance_bytes: int,
) -> list[str]:
    """A service's processes against its plan: each on a GPU planned for it (nvidia-smi names
    the GPU a process runs on; the unit's CUDA_VISIBLE_DEVICES chose it), and on each planned
    GPU (``planned``: indices) within its fraction of that GPU."""
    if fraction is None or not planned:
        if service_apps:
            used = sum(app["used_memory_bytes"] or 0 for app in service_apps)
            return [f"{where}: planned without a GPU share, yet holds {gib(used)} on the GPU"]
        return []
    by_index = {gpu["index"]: gpu for gpu in gpus}
    problems = misplaced_problems(where, service_apps, gpus, planned)
    for index in planned:
        gpu = by_index.get(index)
        if gpu is None:
            problems.append(f"{where}: planned on GPU {index}, which nvidia-smi does not list")
            continue
        on_it = [app for app in service_apps if app["gpu_uuid"] == gpu["uuid"]]
        problems += service_vram_problems(where, gpu, on_it, fraction, tolerance_bytes)
    return problems


def misplaced_problems(
    where: str,
    service_apps: Iterable[NvidiaComputeApp],
    gpus: Sequence[NvidiaGpu],
    planned: Sequence[int],
) -> list[str]:
    """Each of a service's processes runs on one of its planned GPUs."""
    by_uuid = {gpu["uuid"]: gpu for gpu in gpus}
    wanted = ", ".join(gpu_label(g) for g in gpus if g["index"] in planned) or "none listed"
    problems = []
    for app in service_apps:
        gpu = by_uuid.get(app["gpu_uuid"])
        if gpu is None or gpu["index"] not in planned:
            problems.append(
                f"{where}: PID {app['pid']} runs on "
                f"{gpu_label(gpu) if gpu else app['gpu_uuid']}, not on its planned {wanted}; "
                "check CUDA_VISIBLE_DEVICES in its env file and re-run the deploy"
            )
    return problems


def service_vram_problems(
    where: str,
    gpu: NvidiaGpu,
    service_apps: Sequence[NvidiaComputeApp],
    fraction: float,
    tolerance_bytes: int,
) -> list[str]:
    """A service's GPU memory on one GPU (its processes there) ≤ fraction x its total +
    tolerance.

    vLLM reserves its whole fraction at start (weights, activations, KV cache, CUDA context),
    so a process above it means the plan and the running service disagree.
    """
    label, total = gpu_label(gpu), gpu["memory_total_bytes"]
    if total is None:
        return [f"{where}: nvidia-smi gives no memory total for {label}; is the driver loaded?"]
    if not service_apps:
        return [
            f"{where}: no process of the service holds memory on {label} (planned "
            f"{fraction:.2f} x {gib(total)}); is it running on the CPU or another GPU?"
        ]
    unknown = [str(app["pid"]) for app in service_apps if app["used_memory_bytes"] is None]
    if unknown:
        return [
            f"{where}: nvidia-smi gives no memory figure for PID(s) {', '.join(unknown)} "
            "([N/A] or [Insufficient Permissions]); run the checks as root on the host"
        ]
    used = sum(app["used_memory_bytes"] or 0 for app in service_apps)
    allowed = fraction * total
    if used <= allowed + tolerance_bytes:
        return []
    return [
        f"{where}: uses {gib(used)} on {label}, over its plan of {gib(allowed)} "
        f"({fraction:.2f} x {gib(total)}) + {gib(tolerance_bytes)} tolerance by "
        f"{gib(used - allowed)}; PIDs {', '.join(str(a['pid']) for a in service_apps)}"
    ]


def gpu_total_problems(
    where: str, gpu: NvidiaGpu, planned_fraction: float, tolerance_bytes: int, headroom_bytes: int
) -> list[str]:
    """One GPU's used ≤ the share its services' plans take of it + tolerance, and free ≥ the
    headroom."""
    total, used, free = (
        gpu["memory_total_bytes"],
        gpu["memory_used_bytes"],
        gpu["memory_free_bytes"],
    )
    label = f"{where}: {gpu_label(gpu)}"
    if total is None or used is None or free is None:
        return [f"{label}: nvidia-smi gives no memory figures ([N/A]); cannot check the plan"]
    problems = []
    planned = planned_fraction * total
    if used > planned + tolerance_bytes:
        problems.append(
            f"{label}: {gib(used)} in use, over the plan's {gib(planned)} "
            f"({planned_fraction:.2f} x {gib(total)}) + {gib(tolerance_bytes)} tolerance "
            f"by {gib(used - planned)}"
        )
    if free < headroom_bytes:
        problems.append(
            f"{label}: {gib(free)} free, under llmhost_gpu_headroom_gib ({gib(headroom_bytes)}); "
            "lower a service's share (llmhost_gpu_memory_cap) or the headroom"
        )
    return problems


def plan_gpu_problems(
    where: str, gpus: Sequence[NvidiaGpu], planned: Sequence[AppliedGpu]
) -> list[str]:
    """The plan's fractions only mean what was planned on each GPU: the same index, size and
    (where the plan knows it) UUID."""
    if not gpus:
        return [f"{where}: nvidia-smi lists no GPU; is the driver loaded?"]
    if not planned:
        return [f"{where}: plan.json names no GPU; re-run the deploy to plan this host's GPUs"]
    by_index = {gpu["index"]: gpu for gpu in gpus}
    problems = []
    for want in planned:
        found = by_index.get(want.index)
        made_for = f"plan.json was made for GPU {want.index} of {gib(want.total_bytes)}" + (
            f" ({want.uuid})" if want.uuid else ""
        )
        if found is None:
            problems.append(
                f"{where}: {made_for}, which nvidia-smi does not list (it lists "
                f"{', '.join(gpu_label(g) for g in gpus)}); re-run the deploy"
            )
        elif found["memory_total_bytes"] != want.total_bytes or want.uuid not in (
            None,
            found["uuid"],
        ):
            size = found["memory_total_bytes"]
            problems.append(
                f"{where}: {made_for}, the host's is {gpu_label(found)} of "
                f"{gib(size) if size is not None else '[N/A]'}; re-run the deploy so the plan "
                "matches this GPU"
            )
    return problems


def exporter_gpu_problems(
    where: str,
    exported: Iterable[tuple[Mapping[str, str], float]],
    service_apps: Iterable[NvidiaComputeApp],
    gpus: Sequence[NvidiaGpu],
    tolerance_bytes: int,
) -> list[str]:
    """The GPU exporter's samples of a service's memory (labels, bytes) against nvidia-smi's,
    GPU by GPU, each under nvidia-smi's index: the alerts select a GPU by that index."""
    by_uuid = {gpu["uuid"]: gpu for gpu in gpus}
    said: dict[str, float] = {}
    index: dict[str, str] = {}
    for labels, value in exported:
        uuid = labels.get("uuid", "")
        said[uuid] = said.get(uuid, 0.0) + value
        index[uuid] = labels.get("gpu", "")
    problems = [
        f"{where}: the GPU exporter calls {gpu_label(gpu)} GPU {index[uuid]}; the alerts "
        "select GPUs by nvidia-smi's index"
        for uuid, gpu in by_uuid.items()
        if uuid in index and index[uuid] != str(gpu["index"])
    ]
    seen: dict[str, float] = {}
    for app in service_apps:
        seen[app["gpu_uuid"]] = seen.get(app["gpu_uuid"], 0.0) + (app["used_memory_bytes"] or 0)
    for uuid in sorted(said.keys() | seen.keys()):
        apart = abs(said.get(uuid, 0.0) - seen.get(uuid, 0.0))
        if apart > tolerance_bytes:
            gpu = by_uuid.get(uuid)
            problems.append(
                f"{where}: on {gpu_label(gpu) if gpu else uuid} the GPU exporter says "
                f"{gib(said.get(uuid, 0.0))}, nvidia-smi {gib(seen.get(uuid, 0.0))}: more apart "
                f"than the {gib(tolerance_bytes)} tolerance"
            )
    return problems


def driver_problems(where: str, gpus: Sequence[NvidiaGpu], minimum: str) -> list[str]:
    if not gpus:
        return [f"{where}: nvidia-smi lists no GPU; is the driver loaded?"]
    problems = []
    for gpu in gpus:
        found = gpu["driver_version"]
        if found is None or not version_at_least(found, minimum):
            problems.append(
                f"{where}: GPU {gpu['index']} runs driver {found or '[N/A]'}, "
                f"llmhost_min_nvidia_driver is {minimum}; install a newer driver"
            )
    return problems


def foreign_gpu_problems(
    where: str, apps: Iterable[NvidiaComputeApp], our_pids: Iterable[int]
) -> list[str]:
    ours = set(our_pids)
    return [
        f"{where}: PID {app['pid']} ({app['process_name']}) holds "
        f"{gib(app['used_memory_bytes']) if app['used_memory_bytes'] is not None else '[N/A]'} "
        "on the GPU and is not one of the llmhost services"
        for app in apps
        if app["pid"] not in ours
    ]


# --- load smoke ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadSummary:
    service: str
    requests: int
    failures: list[str]
    p50_s: float | None
    p95_s: float | None

    def line(self, where: str) -> str:
        ok = self.requests - len(self.failures)
        if self.p50_s is None or self.p95_s is None:
            return f"{where}::{self.service}: {ok}/{self.requests} ok"
        return (
            f"{where}::{self.service}: {ok}/{self.requests} ok, "
            f"latency p50 {self.p50_s:.2f} s, p95 {self.p95_s:.2f} s"
        )


def summarise_load(results: Iterable[Mapping[str, Any]]) -> dict[str, LoadSummary]:
    """Per service: failed requests (status, error) and p50/p95 of the successful ones.

    ``results`` are the probe's records: service, status, seconds, text_len, error.
    """
    by_service: dict[str, list[Mapping[str, Any]]] = {}
    for record in results:
        by_service.setdefault(record["service"], []).append(record)
    summaries = {}
    for service, records in by_service.items():
        failures = [
            f"HTTP {r['status']}" + (f" ({r['error']})" if r.get("error") else "")
            if r["status"] != 200
            else "200 with empty text"
            for r in records
            if r["status"] != 200 or not r.get("text_len")
        ]
        ok = [float(r["seconds"]) for r in records if r["status"] == 200 and r.get("text_len")]
        summaries[service] = LoadSummary(
            service=service,
            requests=len(records),
            failures=failures,
            p50_s=percentile(ok, 50) if ok else None,
            p95_s=percentile(ok, 95) if ok else None,
        )
    return summaries
