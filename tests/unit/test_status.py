"""``llmhost status`` without a host: the probe's answers in, the screen and exit code out."""

from __future__ import annotations

import pytest

from llmhost.applied_plan import AppliedGpu, AppliedPlan, AppliedService
from llmhost.cli import status as status_cli
from llmhost.observe import status
from llmhost.observe.reach import reach
from llmhost.settings import Settings

GIB = 1024**3


def _svc(
    name: str, port: int, fraction: float | None, kv_gib: int | None, gpus: list[int] | None = None
) -> AppliedService:
    return AppliedService(
        name=name,
        unit=f"llmhost-{name}.service",
        port=port,
        bind_host="127.0.0.1",
        served_model_name=name,
        max_model_len=1024,
        gpu_memory_utilization=fraction,
        cpu_kv_cache_gib=kv_gib,
        kv_tokens=1000,
        gpus=[0] if gpus is None and fraction else gpus or [],
    )


GPU_PLAN = AppliedPlan(
    gpu=True,
    gpus=[AppliedGpu(index=0, uuid="GPU-0", total_bytes=100 * GIB)],
    gpu_memory_cap=0.9,
    services={
        "coder": _svc("coder", 8001, 0.55, None),
        "general": _svc("general", 8002, 0.3, None),
    },
)
UNITS = {
    "coder": {"ActiveState": "active", "SubState": "running", "NRestarts": "0", "pids": [7]},
    "general": {"ActiveState": "failed", "SubState": "failed", "NRestarts": "2", "pids": []},
}


def _vector(*rows: tuple[dict[str, str], float]) -> dict:
    return {
        "status": "success",
        "data": {"result": [{"metric": m, "value": [0, str(v)]} for m, v in rows]},
    }


def _prometheus_probe() -> dict:
    q = {key: _vector() for key in status.queries("gpu-01")}
    q["up"] = _vector(({"service": "coder"}, 1), ({"service": "general"}, 0))
    q["kv"] = _vector(({"service": "coder"}, 0.42))
    q["running"] = _vector(({"service": "coder"}, 3))
    q["waiting"] = _vector(({"service": "coder"}, 1))
    q["gen_tps"] = _vector(({"service": "coder"}, 123.4))
    q["ttft"] = _vector(({"service": "coder"}, float("nan")))
    q["gpu_service"] = _vector(({"service": "coder"}, 55 * GIB))
    gpu = {"gpu": "0", "name": "NVIDIA H200"}
    q["gpu_total"] = _vector((gpu, 100 * GIB))
    q["gpu_used"] = _vector((gpu, 60 * GIB))
    q["gpu_free"] = _vector((gpu, 40 * GIB))
    q["alerts"] = _vector(({"alertname": "LLMServiceDown", "service": "general"}, 1))
    ide = {"client": "ide", "model": "deepseek-coder"}
    q["usage_requests"] = _vector((ide, 3))
    q["usage_prompt"] = _vector((ide, 120))
    q["usage_completion"] = _vector((ide, 45))
    return {"units": UNITS, "queries": q}


def test_from_prometheus() -> None:
    got = status.from_prometheus("gpu-01", GPU_PLAN, _prometheus_probe())
    coder, general = got.services
    assert (coder.active, coder.restarts, coder.up) == ("active/running", 0, True)
    assert (coder.kv_usage, coder.running, coder.waiting, coder.gen_tps) == (0.42, 3, 1, 123.4)
    # No request in the last minute: a NaN quantile is shown as no number.
    assert coder.ttft_p50_s is None
    assert (coder.memory_bytes, coder.planned_bytes) == (55 * GIB, 0.55 * 100 * GIB)
    assert (general.up, general.restarts) == (False, 2)
    assert got.alerts == ["LLMServiceDown general"]
    assert not got.healthy
    screen = status.render(got)
    assert "GPU 55.00 GiB / 55.00 GiB" in screen and "42.0%" in screen
    assert (
        "GPU 0 NVIDIA H200: used 60.00 GiB, free 40.00 GiB of 100.00 GiB; services' plan "
        "85.00 GiB" in screen
    )
    assert "alerts firing: LLMServiceDown general" in screen
    assert "  ide deepseek-coder 3 120/45" in screen


# Two GPUs: coder and general on GPU 0 (80 GiB), general-2 on GPU 1 (48 GiB).
TWO_GPUS = AppliedPlan(
    gpu=True,
    gpus=[
        AppliedGpu(index=0, uuid="GPU-0", total_bytes=80 * GIB),
        AppliedGpu(index=1, uuid="GPU-1", total_bytes=48 * GIB),
    ],
    gpu_memory_cap=0.9,
    services={
        "coder": _svc("coder", 8001, 0.55, None, [0]),
        "general": _svc("general", 8002, 0.3, None, [0]),
        "general-2": _svc("general-2", 8003, 0.85, None, [1]),
    },
)


def test_each_gpu_against_the_plan_of_its_own_services() -> None:
    probe = _prometheus_probe()
    probe["units"] = {name: UNITS["coder"] for name in TWO_GPUS.services}
    q = probe["queries"]
    q["up"] = _vector(*(({"service": name}, 1) for name in TWO_GPUS.services))
    q["gpu_service"] = _vector(
        ({"service": "coder"}, 44 * GIB),
        ({"service": "general"}, 24 * GIB),
        ({"service": "general-2"}, 40 * GIB),
    )
    gpus = [({"gpu": "0", "name": "NVIDIA A100"}, 80), ({"gpu": "1", "name": "NVIDIA L40S"}, 48)]
    q["gpu_total"] = _vector(*((g, size * GIB) for g, size in gpus))
    q["gpu_used"] = _vector((gpus[0][0], 68 * GIB), (gpus[1][0], 41 * GIB))
    q["gpu_free"] = _vector((gpus[0][0], 12 * GIB), (gpus[1][0], 7 * GIB))
    got = status.from_prometheus("gpu-01", TWO_GPUS, probe)
    assert [(s.name, s.gpus) for s in got.services] == [
        ("coder", [0]),
        ("general", [0]),
        ("general-2", [1]),
    ]
    assert got.services[2].planned_bytes == pytest.approx(0.85 * 48 * GIB)
    assert [(g.index, g.planned_bytes) for g in got.gpus] == [
        ("0", pytest.approx(0.85 * 80 * GIB)),
        ("1", pytest.approx(0.85 * 48 * GIB)),
    ]
    screen = status.render(got)
    assert "GPU 0 44.00 GiB / 44.00 GiB" in screen
    assert "GPU 1 40.00 GiB / 40.80 GiB" in screen
    assert (
        "GPU 0 NVIDIA A100: used 68.00 GiB, free 12.00 GiB of 80.00 GiB; services' plan 68.00 GiB"
        in screen
    )
    assert (
        "GPU 1 NVIDIA L40S: used 41.00 GiB, free 7.00 GiB of 48.00 GiB; services' plan 40.80 GiB"
        in screen
    )


def test_nvidia_smi_per_gpu_when_monitoring_is_off() -> None:
    gpus = (
        "0, GPU-0, NVIDIA A100, 81920, 69632, 12288, 8.0, 580.65.06\n"
        "1, GPU-1, NVIDIA L40S, 49152, 41984, 7168, 8.9, 580.65.06\n"
    )
    apps = "7, GPU-0, 45056, python3\n8, GPU-0, 24576, python3\n9, GPU-1, 40960, python3\n"
    units = {
        name: {**UNITS["coder"], "pids": [pid]}
        for name, pid in (("coder", 7), ("general", 8), ("general-2", 9))
    }
    probe = {
        "units": units,
        "metrics": {},
        "smi": {"gpus": {"rc": 0, "out": gpus}, "apps": {"rc": 0, "out": apps}},
    }
    got = status.from_metrics("gpu-01", TWO_GPUS, probe)
    assert [s.memory_bytes for s in got.services] == [44 * GIB, 24 * GIB, 40 * GIB]
    assert [(g.index, g.name, g.planned_bytes) for g in got.gpus] == [
        ("0", "NVIDIA A100", pytest.approx(0.85 * 80 * GIB)),
        ("1", "NVIDIA L40S", pytest.approx(0.85 * 48 * GIB)),
    ]
    assert "general-2  active/running  0         GPU 1 40.00 GiB / 40.80 GiB" in status.render(got)


def test_prometheus_down_is_an_error_not_a_crash() -> None:
    probe = _prometheus_probe()
    probe["queries"]["up"] = {"status": "error", "error": "URLError: Connection refused"}
    got = status.from_prometheus("gpu-01", GPU_PLAN, probe)
    assert got.error == "Prometheus did not answer: URLError: Connection refused"
    assert status_cli._code([got]) is status_cli.Exit.UNREACHABLE


METRICS = """\
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.25
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 0.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="tiny"} 2.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.2",model_name="tiny"} 6.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 8.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny"} 8.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="tiny"} 1.0
"""


def test_from_metrics_on_a_cpu_host() -> None:
    plan = GPU_PLAN.model_copy(
        update={
            "gpu": False,
            "gpus": [],
            "services": {"coder": _svc("coder", 8001, None, 1)},
        }
    )
    units = {"coder": {**UNITS["coder"], "rss_bytes": 3 * GIB}}
    probe = {"units": units, "metrics": {"coder": {"text": METRICS}}}
    got = status.from_metrics("lab", plan, probe)
    (coder,) = got.services
    assert (coder.kv_usage, coder.running, coder.waiting) == (0.25, 2, 0)
    # Rank 4 of 8 lies halfway through the (0.1, 0.2] bucket, as histogram_quantile puts it.
    assert coder.ttft_p50_s == pytest.approx(0.15)
    assert (coder.memory_kind, coder.memory_bytes, coder.planned_bytes) == ("RSS", 3 * GIB, GIB)
    assert got.healthy
    assert "RSS 3.00 GiB (KV 1.00 GiB)" in status.render(got)


def test_ssh_argv_follows_the_inventory() -> None:
    data = {
        "ssh_hostname": "10.0.0.2",
        "ssh_user": "root",
        "ssh_port": 2222,
        "ssh_key": "/k",
        "ssh_strict_host_key_checking": "no",
        "ssh_known_hosts_file": "/dev/null",
    }
    argv = reach("lab-mon", data).ssh_argv(["python3", "-c", "print('a b')"])
    assert argv[-2:] == ["root@10.0.0.2", "python3 -c 'print('\"'\"'a b'\"'\"')'"]
    assert argv[argv.index("-p") : argv.index("-p") + 2] == ["-p", "2222"]
    assert reach("@local", {}).ssh_argv(["true"]) == ["true"]


def test_status_names_a_missing_inventory(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from llmhost.cli import main as cli

    missing = str(tmp_path / "nope.py")
    assert cli.main(["status", missing]) == status_cli.Exit.USAGE
    assert f"llmhost status: {missing}: no such inventory file" in capsys.readouterr().err


def test_status_limit_that_matches_nothing(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from llmhost.cli import main as cli

    inventory = tmp_path / "inv.py"
    inventory.write_text('hosts = ["gpu-01"]\n')
    code = cli.main(["status", str(inventory), "--limit", "gpu-9*", "--project-dir", str(tmp_path)])
    assert code == status_cli.Exit.USAGE
    assert "--limit gpu-9*: no host matches (hosts: gpu-01)" in capsys.readouterr().err


def test_status_reads_each_replica_by_its_unit() -> None:
    data = {"llmhost_gpu": False, "llmhost_service_overrides": {"general": {"replicas": 2}}}
    args = status_cli.probe_args("lab", Settings.from_host_data(data, "lab"))
    assert args["units"] == {
        "coder": "llmhost-coder.service",
        "general": "llmhost-general.service",
        "general-2": "llmhost-general-2.service",
    }
