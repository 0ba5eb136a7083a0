"""llmhost.observe.checks: the comparisons behind tests/host, fed with numbers seen on a real H200.

The GPU figures are the device run's (bench/gpu_checks_device_run.txt): an H200 of 143771 MiB,
a coder holder at 78728 MiB (82824 MiB once planted 4 GiB over), a general one at 42942 MiB.
"""

from __future__ import annotations

import pytest

from llmhost import layout
from llmhost.facts.nvidia import NvidiaComputeApp, NvidiaGpu
from llmhost.observe.checks import (
    MIB,
    driver_problems,
    foreign_gpu_problems,
    gpu_total_problems,
    journal_problems,
    listener_problems,
    parse_service_pids,
    parse_systemctl_show,
    percentile,
    plan_gpu_problems,
    service_vram_problems,
    summarise_load,
    version_at_least,
)

UUID = "GPU-24c93693-1df4-8965-cd32-9f8883599a38"
H200_TOTAL = 143771 * MIB
TOLERANCE = 512 * MIB
HEADROOM = 2 * 1024 * MIB


def h200(
    used_mib: int | None, free_mib: int | None, driver: str | None = "580.159.04"
) -> NvidiaGpu:
    return {
        "index": 0,
        "uuid": UUID,
        "name": "NVIDIA H200",
        "memory_total_bytes": H200_TOTAL,
        "memory_used_bytes": None if used_mib is None else used_mib * MIB,
        "memory_free_bytes": None if free_mib is None else free_mib * MIB,
        "compute_cap": (9, 0),
        "driver_version": driver,
    }


def app(pid: int, used_mib: int | None, name: str = "python3") -> NvidiaComputeApp:
    return {
        "pid": pid,
        "gpu_uuid": UUID,
        "used_memory_bytes": None if used_mib is None else used_mib * MIB,
        "process_name": name,
    }


def test_systemctl_show_keeps_values_with_equals_signs() -> None:
    props = parse_systemctl_show("NRestarts=0\nDropInPaths=\nEnvironment=A=1 B=2\n")
    assert props == {"NRestarts": "0", "DropInPaths": "", "Environment": "A=1 B=2"}


def test_service_pids_option() -> None:
    assert parse_service_pids("coder=460, general=486,general=487") == {
        "coder": [460],
        "general": [486, 487],
    }
    with pytest.raises(ValueError, match="'coder': write SERVICE=PID"):
        parse_service_pids("coder")


def test_journal_catches_memory_failures_only() -> None:
    lines = [
        "INFO 11-28 02:19:11 [api_server.py:1] vLLM API server version 0.33.0",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
        "ValueError: Free memory on device (40.1/139.8 GiB) on startup is less than desired "
        "GPU memory utilization (0.55, 76.9 GiB).",
        "RuntimeError: CUDA error: an illegal memory access was encountered",
        "A process of this unit has been killed by the OOM killer.",
        "INFO: 127.0.0.1:50000 - POST /v1/chat/completions HTTP/1.1 200 OK",
    ]
    assert journal_problems(lines) == lines[1:5]


@pytest.mark.parametrize(
    ("found", "minimum", "ok"),
    [
        ("580.159.04", "580.65.06", True),  # a string compare gets this one wrong
        ("580.65.06", "580.65.06", True),
        ("575.57.08", "580.65.06", False),
    ],
)
def test_version_at_least(found: str, minimum: str, ok: bool) -> None:
    assert version_at_least(found, minimum) is ok


def test_percentile_nearest_rank() -> None:
    latencies = [float(n) for n in range(16, 0, -1)]
    assert percentile(latencies, 50) == 8.0
    assert percentile(latencies, 95) == 16.0
    assert percentile([0.3], 95) == 0.3
    with pytest.raises(ValueError):
        percentile([], 50)


@pytest.mark.parametrize(
    ("bind", "url_host"),
    [
        ("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("::1", "[::1]"),
        ("fd00::5", "[fd00::5]"), ("gpu-01.internal", "gpu-01.internal"),
    ],
)  # fmt: skip
def test_url_host(bind: str, url_host: str) -> None:
    assert layout.url_host(bind) == url_host


def test_listeners_planned_plus_internal_loopback_pass() -> None:
    found = [("127.0.0.1", 8001), ("127.0.0.1", 45123), ("::1", 45124)]
    assert listener_problems("gpu-01::coder", found, "127.0.0.1", 8001) == []


def test_listeners_on_all_interfaces_fail_twice() -> None:
    problems = listener_problems("gpu-01::coder", [("0.0.0.0", 8001)], "127.0.0.1", 8001)
    assert problems == [
        "gpu-01::coder: not listening on 127.0.0.1:8001 (plan.json); its TCP listeners: "
        "0.0.0.0:8001",
        "gpu-01::coder: also listening on 0.0.0.0:8001, reachable beyond the planned "
        "127.0.0.1:8001; for the API port check --host; for vLLM's internal ports "
        "set GLOO_SOCKET_IFNAME=lo in the env file (gloo); a wildcard port of vLLM 0.27 or "
        "older is PyTorch's TCPStore (vLLM #52638): pin 0.28.0 or later, or firewall it and "
        "set llmhost_vllm_tcpstore_firewalled",
    ]


def test_a_firewalled_tcpstore_port_is_accepted_but_never_the_api_port() -> None:
    # vLLM 0.25.0 on the GPU host: the API on loopback, its TCPStore on every address.
    found = [("127.0.0.1", 8001), ("::", 58511)]
    assert listener_problems("gpu-01::coder", found, "127.0.0.1", 8001)
    assert listener_problems("gpu-01::coder", found, "127.0.0.1", 8001, True) == []
    api_everywhere = [("127.0.0.1", 8001), ("0.0.0.0", 8001)]
    assert listener_problems("gpu-01::coder", api_everywhere, "127.0.0.1", 8001, True)


def test_listeners_none() -> None:
    assert listener_problems("gpu-01::coder", [], "127.0.0.1", 8001) == [
        "gpu-01::coder: not listening on 127.0.0.1:8001 (plan.json); its TCP listeners: none"
    ]


def test_service_within_plan() -> None:
    assert (
        service_vram_problems("gpu-01::coder", [app(460, 78728)], 0.55, H200_TOTAL, TOLERANCE) == []
    )


def test_service_over_plan_names_service_and_numbers() -> None:
    problems = service_vram_problems(
        "gpu-01::coder", [app(460, 82824)], 0.55, H200_TOTAL, TOLERANCE
    )
    assert problems == [
        "gpu-01::coder: uses 80.88 GiB of GPU memory, over its plan of 77.22 GiB "
        "(0.55 x 140.40 GiB) + 0.50 GiB tolerance by 3.66 GiB; PIDs 460"
    ]


def test_service_memory_sums_its_processes() -> None:
    # vLLM's API server and engine core are separate processes of one service.
    apps = [app(460, 40000), app(461, 40000)]
    assert service_vram_problems("gpu-01::coder", apps, 0.55, H200_TOTAL, TOLERANCE)


def test_service_without_gpu_process_or_figures() -> None:
    assert (
        "no process of the service holds GPU memory"
        in service_vram_problems("gpu-01::coder", [], 0.55, H200_TOTAL, TOLERANCE)[0]
    )
    assert (
        "no memory figure for PID(s) 460"
        in service_vram_problems("gpu-01::coder", [app(460, None)], 0.55, H200_TOTAL, TOLERANCE)[0]
    )
    assert service_vram_problems("lab::coder", [], None, H200_TOTAL, TOLERANCE) == []


def test_gpu_total_busy_passes_planted_fails() -> None:
    assert gpu_total_problems("gpu-01", h200(121685, 21472), 0.85, TOLERANCE, HEADROOM) == []
    assert gpu_total_problems("gpu-01", h200(125781, 17376), 0.85, TOLERANCE, HEADROOM) == [
        "gpu-01: GPU 0 (NVIDIA H200): 122.83 GiB in use, over the plan's 119.34 GiB "
        "(0.85 x 140.40 GiB) + 0.50 GiB tolerance by 3.49 GiB"
    ]


def test_gpu_headroom() -> None:
    problems = gpu_total_problems("gpu-01", h200(121685, 1024), 0.85, TOLERANCE, HEADROOM)
    assert problems == [
        "gpu-01: GPU 0 (NVIDIA H200): 1.00 GiB free, under llmhost_gpu_headroom_gib (2.00 GiB); "
        "lower a service's share (llmhost_gpu_memory_cap) or the headroom"
    ]
    assert "no memory figures" in gpu_total_problems("gpu-01", h200(None, None), 0.85, 0, 0)[0]


def test_plan_must_match_the_gpu() -> None:
    assert plan_gpu_problems("gpu-01", [h200(0, 143156)], H200_TOTAL) == []
    assert plan_gpu_problems("gpu-01", [h200(0, 143156)], 81559 * MIB) == [
        "gpu-01: plan.json was made for a GPU of 79.65 GiB, the host has 140.40 GiB; "
        "re-run the deploy so the plan matches this GPU"
    ]
    assert "lists no GPU" in plan_gpu_problems("gpu-01", [], H200_TOTAL)[0]


def test_driver() -> None:
    assert driver_problems("gpu-01", [h200(0, 0)], "580.65.06") == []
    assert driver_problems("gpu-01", [h200(0, 0, driver="575.57.08")], "580.65.06") == [
        "gpu-01: GPU 0 runs driver 575.57.08, llmhost_min_nvidia_driver is 580.65.06; "
        "install a newer driver"
    ]
    assert "driver [N/A]" in driver_problems("gpu-01", [h200(0, 0, driver=None)], "580.65.06")[0]


def test_foreign_gpu_processes() -> None:
    apps = [app(460, 78728), app(486, 42942), app(999, 1024, "/usr/bin/python3 train.py")]
    assert foreign_gpu_problems("gpu-01", apps, [460, 486]) == [
        "gpu-01: PID 999 (/usr/bin/python3 train.py) holds 1.00 GiB on the GPU and is not one "
        "of the llmhost services"
    ]


def test_load_summary() -> None:
    records = [
        {"service": "coder", "status": 200, "seconds": s, "text_len": 12, "error": None}
        for s in (0.2, 0.4, 0.3, 0.9)
    ] + [
        {"service": "general", "status": 200, "seconds": 0.1, "text_len": 0, "error": None},
        {"service": "general", "status": 0, "seconds": 60.0, "text_len": 0, "error": "timeout"},
        {"service": "general", "status": 401, "seconds": 0.0, "text_len": 0, "error": "nope"},
    ]
    summary = summarise_load(records)
    assert summary["coder"].failures == []
    assert (summary["coder"].p50_s, summary["coder"].p95_s) == (0.3, 0.9)
    assert summary["coder"].line("gpu-01") == (
        "gpu-01::coder: 4/4 ok, latency p50 0.30 s, p95 0.90 s"
    )
    assert summary["general"].failures == [
        "200 with empty text",
        "HTTP 0 (timeout)",
        "HTTP 401 (nope)",
    ]
    assert summary["general"].line("gpu-01") == "gpu-01::general: 0/3 ok"
