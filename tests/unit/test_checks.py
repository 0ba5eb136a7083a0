"""llmhost.observe.checks: the comparisons behind tests/host, fed with numbers seen on a real H200.

The GPU figures are the device run's (bench/gpu_checks_device_run.txt): an H200 of 143771 MiB,
a coder holder at 78728 MiB (82824 MiB once planted 4 GiB over), a general one at 42942 MiB.
"""

from __future__ import annotations

import pytest

from llmhost import layout
from llmhost.applied_plan import AppliedGpu
from llmhost.facts.nvidia import NvidiaComputeApp, NvidiaGpu
from llmhost.observe.checks import (
    MIB,
    driver_problems,
    exporter_gpu_problems,
    foreign_gpu_problems,
    gpu_total_problems,
    journal_problems,
    listener_problems,
    parse_service_pids,
    parse_systemctl_show,
    percentile,
    plan_gpu_problems,
    service_gpu_problems,
    summarise_load,
    version_at_least,
)

UUID = "GPU-24c93693-1df4-8965-cd32-9f8883599a38"
H200_TOTAL = 143771 * MIB
TOLERANCE = 512 * MIB
HEADROOM = 2 * 1024 * MIB


H200 = f"GPU 0 (NVIDIA H200, {UUID})"
L40S_UUID = "GPU-5b2c0e6a-7a3f-4c1e-9d0b-1f2e3d4c5b6a"
L40S_TOTAL = 46068 * MIB
L40S = f"GPU 1 (NVIDIA L40S, {L40S_UUID})"


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


def l40s(used_mib: int, free_mib: int) -> NvidiaGpu:
    """A second, smaller card: GPU 1 of a mixed host."""
    return {
        **h200(used_mib, free_mib),
        "index": 1,
        "uuid": L40S_UUID,
        "name": "NVIDIA L40S",
        "memory_total_bytes": L40S_TOTAL,
    }


def app(pid: int, used_mib: int | None, name: str = "python3", gpu: str = UUID) -> NvidiaComputeApp:
    return {
        "pid": pid,
        "gpu_uuid": gpu,
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


def _service(apps: list[NvidiaComputeApp], fraction: float | None = 0.55) -> list[str]:
    """The coder's check on the one-GPU H200 host it was planned on."""
    return service_gpu_problems("gpu-01::coder", apps, [h200(0, 0)], [0], fraction, TOLERANCE)


def test_service_within_plan() -> None:
    assert _service([app(460, 78728)]) == []


def test_service_over_plan_names_service_gpu_and_numbers() -> None:
    assert _service([app(460, 82824)]) == [
        f"gpu-01::coder: uses 80.88 GiB on {H200}, over its plan of 77.22 GiB "
        "(0.55 x 140.40 GiB) + 0.50 GiB tolerance by 3.66 GiB; PIDs 460"
    ]


def test_service_memory_sums_its_processes() -> None:
    # vLLM's API server and engine core are separate processes of one service.
    assert _service([app(460, 40000), app(461, 40000)])


def test_service_without_gpu_process_or_figures() -> None:
    assert f"no process of the service holds memory on {H200}" in _service([])[0]
    assert "no memory figure for PID(s) 460" in _service([app(460, None)])[0]
    assert _service([], fraction=None) == []
    assert "planned without a GPU share" in _service([app(460, 1024)], fraction=None)[0]


# Two GPUs, an H200 and an L40S: coder on GPU 0, general on GPU 1, or general's replicas one
# on each.
TWO = [h200(0, 0), l40s(0, 0)]


def test_each_service_is_held_to_its_share_of_its_own_gpu() -> None:
    # 0.85 of the L40S is 38.24 GiB: 38000 MiB is within it, 40000 MiB is not (against the
    # H200's size, which a one-GPU reading took for every GPU, both pass).
    general = [app(486, 38000, gpu=L40S_UUID)]
    assert service_gpu_problems("gpu-01::general", general, TWO, [1], 0.85, TOLERANCE) == []
    assert service_gpu_problems(
        "gpu-01::general", [app(486, 40000, gpu=L40S_UUID)], TWO, [1], 0.85, TOLERANCE
    ) == [
        f"gpu-01::general: uses 39.06 GiB on {L40S}, over its plan of 38.24 GiB "
        "(0.85 x 44.99 GiB) + 0.50 GiB tolerance by 0.82 GiB; PIDs 486"
    ]


def test_a_process_on_a_gpu_not_planned_for_it() -> None:
    problems = service_gpu_problems("gpu-01::general", [app(486, 30000)], TWO, [1], 0.85, TOLERANCE)
    assert problems == [
        f"gpu-01::general: PID 486 runs on {H200}, not on its planned {L40S}; check "
        "CUDA_VISIBLE_DEVICES in its env file and re-run the deploy",
        f"gpu-01::general: no process of the service holds memory on {L40S} (planned 0.85 x "
        "44.99 GiB); is it running on the CPU or another GPU?",
    ]


def test_a_tensor_parallel_service_is_checked_on_each_of_its_gpus() -> None:
    apps = [app(460, 30000), app(461, 30000, gpu=L40S_UUID)]
    assert service_gpu_problems("gpu-01::coder", apps, TWO, [0, 1], 0.6, TOLERANCE) == [
        f"gpu-01::coder: uses 29.30 GiB on {L40S}, over its plan of 26.99 GiB "
        "(0.60 x 44.99 GiB) + 0.50 GiB tolerance by 2.30 GiB; PIDs 461"
    ]
    missing = service_gpu_problems("gpu-01::coder", apps[:1], [h200(0, 0)], [0, 1], 0.2, 0)
    assert missing[-1] == "gpu-01::coder: planned on GPU 1, which nvidia-smi does not list"


def test_gpu_total_busy_passes_planted_fails() -> None:
    assert gpu_total_problems("gpu-01", h200(121685, 21472), 0.85, TOLERANCE, HEADROOM) == []
    assert gpu_total_problems("gpu-01", h200(125781, 17376), 0.85, TOLERANCE, HEADROOM) == [
        f"gpu-01: {H200}: 122.83 GiB in use, over the plan's 119.34 GiB "
        "(0.85 x 140.40 GiB) + 0.50 GiB tolerance by 3.49 GiB"
    ]


def test_gpu_total_is_of_each_gpu_with_its_own_plan() -> None:
    # The L40S at 0.85 of itself is within plan; the same bytes against 0.85 + 0.45 (both GPUs'
    # fractions added up, as if one card) would have passed anything.
    assert gpu_total_problems("gpu-01", l40s(38000, 6000), 0.85, TOLERANCE, HEADROOM) == []
    assert gpu_total_problems("gpu-01", l40s(40000, 1000), 0.85, TOLERANCE, HEADROOM) == [
        f"gpu-01: {L40S}: 39.06 GiB in use, over the plan's 38.24 GiB (0.85 x 44.99 GiB) + "
        "0.50 GiB tolerance by 0.82 GiB",
        f"gpu-01: {L40S}: 0.98 GiB free, under llmhost_gpu_headroom_gib (2.00 GiB); lower a "
        "service's share (llmhost_gpu_memory_cap) or the headroom",
    ]


def test_gpu_headroom() -> None:
    problems = gpu_total_problems("gpu-01", h200(121685, 1024), 0.85, TOLERANCE, HEADROOM)
    assert problems == [
        f"gpu-01: {H200}: 1.00 GiB free, under llmhost_gpu_headroom_gib (2.00 GiB); "
        "lower a service's share (llmhost_gpu_memory_cap) or the headroom"
    ]
    assert "no memory figures" in gpu_total_problems("gpu-01", h200(None, None), 0.85, 0, 0)[0]


def _planned(index: int, total: int, uuid: str | None = None) -> AppliedGpu:
    return AppliedGpu(index=index, uuid=uuid, total_bytes=total)


def test_plan_must_match_the_gpu() -> None:
    assert plan_gpu_problems("gpu-01", [h200(0, 143156)], [_planned(0, H200_TOTAL, UUID)]) == []
    assert plan_gpu_problems("gpu-01", [h200(0, 143156)], [_planned(0, 81559 * MIB)]) == [
        f"gpu-01: plan.json was made for GPU 0 of 79.65 GiB, the host's is {H200} of "
        "140.40 GiB; re-run the deploy so the plan matches this GPU"
    ]
    assert "lists no GPU" in plan_gpu_problems("gpu-01", [], [_planned(0, H200_TOTAL)])[0]
    assert "names no GPU" in plan_gpu_problems("gpu-01", [h200(0, 0)], [])[0]


def test_plan_must_match_each_gpu() -> None:
    planned = [_planned(0, H200_TOTAL, UUID), _planned(1, L40S_TOTAL, L40S_UUID)]
    assert plan_gpu_problems("gpu-01", TWO, planned) == []
    # The cards swapped slots: same sizes by index no more, and the UUIDs tell.
    swapped = [{**l40s(0, 0), "index": 0}, {**h200(0, 0), "index": 1}]
    assert len(plan_gpu_problems("gpu-01", swapped, planned)) == 2
    same_size = [h200(0, 0), {**l40s(0, 0), "uuid": "GPU-other"}]
    assert plan_gpu_problems("gpu-01", same_size, planned) == [
        f"gpu-01: plan.json was made for GPU 1 of 44.99 GiB ({L40S_UUID}), the host's is "
        "GPU 1 (NVIDIA L40S, GPU-other) of 44.99 GiB; re-run the deploy so the plan matches "
        "this GPU"
    ]
    assert plan_gpu_problems("gpu-01", TWO[:1], planned) == [
        f"gpu-01: plan.json was made for GPU 1 of 44.99 GiB ({L40S_UUID}), which nvidia-smi "
        f"does not list (it lists {H200}); re-run the deploy"
    ]


def _sample(gpu: str, uuid: str, of: NvidiaComputeApp) -> tuple[dict[str, str], float]:
    """The GPU exporter's sample of a process's memory."""
    labels = {"gpu": gpu, "uuid": uuid, "pid": str(of["pid"]), "service": "general"}
    return labels, float(of["used_memory_bytes"] or 0)


def test_the_exporter_agrees_with_nvidia_smi_gpu_by_gpu() -> None:
    """general's replicas one on each GPU: the exporter's per-process samples, per GPU."""
    apps = [app(486, 30000), app(487, 38000, gpu=L40S_UUID)]
    exported = [_sample("0", UUID, apps[0]), _sample("1", L40S_UUID, apps[1])]
    assert exporter_gpu_problems("gpu-01::general", exported, apps, TWO, TOLERANCE) == []
    # The same total, on the wrong GPUs: the sums agree, the GPUs do not.
    crossed = [_sample("1", UUID, apps[1]), _sample("0", L40S_UUID, apps[0])]
    problems = exporter_gpu_problems("gpu-01::general", crossed, apps, TWO, TOLERANCE)
    assert problems[0] == (
        f"gpu-01::general: the GPU exporter calls {H200} GPU 1; the alerts select GPUs by "
        "nvidia-smi's index"
    )
    assert problems[2:] == [
        f"gpu-01::general: on {H200} the GPU exporter says 37.11 GiB, nvidia-smi 29.30 GiB: "
        "more apart than the 0.50 GiB tolerance",
        f"gpu-01::general: on {L40S} the GPU exporter says 29.30 GiB, nvidia-smi 37.11 GiB: "
        "more apart than the 0.50 GiB tolerance",
    ]


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
