"""The alert rules and Prometheus config, checked and tested by the real promtool.

Each alert has a case where it fires and one where it does not (``promtool test rules``); the
rules and the whole prometheus.yml pass ``promtool check``. Debian's ``prometheus`` package
brings promtool (``apt-get install prometheus``; .ci/run installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmhost.applied_plan import AppliedGpu, AppliedPlan, AppliedService
from llmhost.monitoring import alerts, scrape
from llmhost.settings import Settings

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found: apt-get install prometheus (Debian's package)"
)
HOST = "gpu-01"
GIB = 1024**3
TOTAL = 100 * GIB


def _service(name: str, port: int, fraction: float, gpu: int = 0) -> AppliedService:
    return AppliedService(
        name=name,
        unit=f"llmhost-{name}.service",
        port=port,
        bind_host="127.0.0.1",
        served_model_name=f"{name}-model",
        max_model_len=8192,
        gpu_memory_utilization=fraction,
        cpu_kv_cache_gib=None,
        kv_tokens=100_000,
        gpus=[gpu],
    )


PLAN = AppliedPlan(
    gpu=True,
    gpus=[AppliedGpu(index=0, uuid="GPU-1", total_bytes=TOTAL)],
    gpu_memory_cap=0.9,
    services={"coder": _service("coder", 8001, 0.55), "general": _service("general", 8002, 0.30)},
)
SETTINGS = Settings.from_host_data({}, HOST)
TARGETS = scrape.targets(SETTINGS, PLAN, HOST)


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    (tmp_path / "rules.yml").write_text(alerts.rules_file(SETTINGS, PLAN, TARGETS))
    return tmp_path


def test_promtool_checks_the_rules(rules_dir: Path) -> None:
    result = _promtool("check", "rules", "rules.yml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_whole_config(rules_dir: Path) -> None:
    config = scrape.prometheus_config(SETTINGS, TARGETS, str(rules_dir / "rules.yml"))
    (rules_dir / "prometheus.yml").write_text(config)
    result = _promtool("check", "config", "prometheus.yml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {job["job_name"]: job for job in yaml.safe_load(config)["scrape_configs"]}
    assert list(jobs) == ["llmhost-vllm", "prometheus", "node", "llmhost-gpu"]
    assert jobs["llmhost-vllm"]["static_configs"] == [
        {"targets": ["127.0.0.1:8001"], "labels": {"host": HOST, "service": "coder"}},
        {"targets": ["127.0.0.1:8002"], "labels": {"host": HOST, "service": "general"}},
    ]


def test_each_replica_is_a_target_of_its_own(tmp_path: Path) -> None:
    replicas = {
        name: _service(name, 8001 + n, 0.30).model_copy(update={"replica_of": "general"})
        for n, name in ((1, "general"), (2, "general-2"))
    }
    plan = PLAN.model_copy(update={"services": {"coder": PLAN.services["coder"], **replicas}})
    found = scrape.targets(SETTINGS, plan, HOST)
    (tmp_path / "rules.yml").write_text(alerts.rules_file(SETTINGS, plan, found))
    config = scrape.prometheus_config(SETTINGS, found, str(tmp_path / "rules.yml"))
    (tmp_path / "prometheus.yml").write_text(config)
    for check in (("check", "rules", "rules.yml"), ("check", "config", "prometheus.yml")):
        result = _promtool(*check, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
    vllm = next(
        j for j in yaml.safe_load(config)["scrape_configs"] if j["job_name"] == "llmhost-vllm"
    )
    assert [(c["targets"], c["labels"]["service"]) for c in vllm["static_configs"]] == [
        (["127.0.0.1:8001"], "coder"), (["127.0.0.1:8002"], "general"),
        (["127.0.0.1:8003"], "general-2"),
    ]  # fmt: skip
    # A replica's memory is held to its own plan, by its own name.
    over = [r for r in alerts.gpu_rules(SETTINGS, plan) if r["alert"] == "LLMServiceGPUOverPlan"]
    assert [r["labels"]["service"] for r in over] == ["coder", "general", "general-2"]


def test_a_cpu_host_has_no_gpu_target_or_rules() -> None:
    plan = PLAN.model_copy(update={"gpu": False, "gpus": []})
    cpu = scrape.targets(SETTINGS, plan, "lab")
    assert "llmhost-gpu" not in {t.job for t in cpu}
    names = {r["alert"] for r in alerts.rules(SETTINGS, plan, cpu)["groups"][0]["rules"]}
    assert not names & {"LLMServiceGPUOverPlan", "LLMGPUOverPlan", "LLMGPUHeadroomLow"}


def test_export_mode_scrapes_the_services_and_the_gateway_given() -> None:
    export = Settings.from_host_data({"llmhost_monitoring": "export"}, HOST)
    found = scrape.targets(export, PLAN, HOST, extra=scrape.gateway_targets(HOST, "127.0.0.1:8404"))
    doc = yaml.safe_load(scrape.export_config(found))
    jobs = {job["job_name"]: job["metrics_path"] for job in doc["scrape_configs"]}
    assert jobs == {
        "llmhost-vllm": "/metrics",
        "llmhost-gateway": "/metrics",
        "llmhost-gateway-usage": "/usage",
    }


def _vllm(metric: str, service: str = "coder") -> str:
    return f'{metric}{{job="llmhost-vllm", host="{HOST}", service="{service}"}}'


def _labels(alert: str, **labels: str) -> dict[str, str]:
    severity = "critical" if alert == "LLMServiceDown" else "warning"
    return {"severity": severity, **labels}


def _selector(labels: dict[str, str]) -> str:
    return ", ".join(f'{k}="{v}"' for k, v in labels.items())


def _process(gpu: dict[str, str], pid: int, service: str) -> str:
    """The GPU exporter's series for one process."""
    labels = {"host": HOST, **gpu, "pid": str(pid), "service": service}
    return f"llmhost_gpu_process_memory_used_bytes{{{_selector(labels)}}}"


def _gpu(metric: str, gpu: dict[str, str]) -> str:
    return f"llmhost_gpu_memory_{metric}_bytes{{{_selector({'host': HOST, **gpu})}}}"


SVC = {"job": "llmhost-vllm", "host": HOST, "service": "coder"}
GPU0 = {"gpu": "0", "uuid": "GPU-1", "name": "NVIDIA H200"}
H200 = "GPU 0 (NVIDIA H200, GPU-1)"
# (alert, input series, eval time, expected alerts as (labels, summary)).
Case = tuple[str, list[tuple[str, str]], str, list[tuple[dict[str, str], str]]]
CASES: dict[str, Case] = {
    "down 2 min: fires": (
        "LLMServiceDown",
        [(_vllm("up"), "0x10"), (_vllm("up", "general"), "1x10")],
        "2m",
        [(SVC, f"{HOST}: coder has not answered /metrics for 60 s")],
    ),
    "down 45 s: not yet": ("LLMServiceDown", [(_vllm("up"), "1 1 1 1 0 0 0 0")], "105s", []),
    "restarted: fires": (
        "LLMServiceRestarted",
        [(_vllm("process_start_time_seconds"), "1000x4 2000x20")],
        "3m",
        [(SVC, f"{HOST}: coder restarted in the last 900 s")],
    ),
    "restarted after 20 min down, longer than the window: fires": (
        "LLMServiceRestarted",
        [(_vllm("process_start_time_seconds"), "1000x4 stale _x80 2000x8")],
        "23m",
        [(SVC, f"{HOST}: coder restarted in the last 900 s")],
    ),
    "a replica restarted: fires, naming it": (
        "LLMServiceRestarted",
        [
            (_vllm("process_start_time_seconds", "general"), "1000x24"),
            (_vllm("process_start_time_seconds", "general-2"), "1000x4 2000x20"),
        ],
        "3m",
        [({**SVC, "service": "general-2"}, f"{HOST}: general-2 restarted in the last 900 s")],
    ),
    "first start: quiet": (
        "LLMServiceRestarted",
        [(_vllm("process_start_time_seconds"), "_x8 2000x20")],
        "6m",
        [],
    ),
    "stopped for good: quiet": (
        "LLMServiceRestarted",
        [(_vllm("process_start_time_seconds"), "1000x4 stale _x20")],
        "5m",
        [],
    ),
    "restarted 20 min ago: cleared": (
        "LLMServiceRestarted",
        [(_vllm("process_start_time_seconds"), "1000x4 2000x100")],
        "21m",
        [],
    ),
    "KV cache 95% for 6 min: fires": (
        "LLMKVCacheFull",
        [(_vllm("vllm:kv_cache_usage_perc"), "0.95x30")],
        "6m",
        [(SVC, f"{HOST}: coder KV cache 95% full for 300 s")],
    ),
    "KV cache 95% for 4 min: not yet": (
        "LLMKVCacheFull",
        [(_vllm("vllm:kv_cache_usage_perc"), "0.95x30")],
        "4m",
        [],
    ),
    "KV cache 85%: fine": (
        "LLMKVCacheFull",
        [(_vllm("vllm:kv_cache_usage_perc"), "0.85x30")],
        "6m",
        [],
    ),
    "waiting 6 min: fires": (
        "LLMRequestsQueued",
        [(_vllm("vllm:num_requests_waiting"), "3x30")],
        "6m",
        [(SVC, f"{HOST}: coder has had requests waiting for 300 s (3 now)")],
    ),
    "waiting drained: fine": (
        "LLMRequestsQueued",
        [(_vllm("vllm:num_requests_waiting"), "3x8 0x20")],
        "6m",
        [],
    ),
    "coder 60 GiB of 55 planned: fires": (
        "LLMServiceGPUOverPlan",
        [
            (_process(GPU0, 7, "coder"), f"{60 * GIB}x20"),
            (_process(GPU0, 8, "general"), f"{30 * GIB}x20"),
        ],
        "3m",
        [
            (
                {"host": HOST, "service": "coder", **GPU0},
                f"{HOST}: coder uses 60GiB of {H200}, over its plan (0.550 of it) + 512 MiB",
            )
        ],
    ),
    "coder within plan + tolerance: fine": (
        "LLMServiceGPUOverPlan",
        [(_process(GPU0, 7, "coder"), f"{int(55.3 * GIB)}x20")],
        "3m",
        [],
    ),
    "GPU 0 90 GiB in use of 85 planned: fires": (
        "LLMGPUOverPlan",
        [(_gpu("used", GPU0), f"{90 * GIB}x20")],
        "3m",
        [
            (
                {"host": HOST, **GPU0},
                f"{HOST}: {H200} has 90GiB in use, over the plan of its services (0.850 of it) "
                "+ 512 MiB",
            )
        ],
    ),
    "GPU 0 at its plan: fine": (
        "LLMGPUOverPlan",
        [(_gpu("used", GPU0), f"{85 * GIB}x20")],
        "3m",
        [],
    ),
    "1 GiB free: fires": (
        "LLMGPUHeadroomLow",
        [(_gpu("free", GPU0), f"{GIB}x20")],
        "3m",
        [
            (
                {"host": HOST, **GPU0},
                f"{HOST}: {H200} has 1GiB free, below llmhost_gpu_headroom_gib (2.0 GiB)",
            )
        ],
    ),
    "3 GiB free: fine": (
        "LLMGPUHeadroomLow",
        [(_gpu("free", GPU0), f"{3 * GIB}x20")],
        "3m",
        [],
    ),
    "node exporter down: fires": (
        "LLMTargetDown",
        [(f'up{{job="node", host="{HOST}", instance="127.0.0.1:9100"}}', "0x10")],
        "2m",
        [
            (
                {"job": "node", "host": HOST, "instance": "127.0.0.1:9100"},
                f"{HOST}: node target 127.0.0.1:9100 is down",
            )
        ],
    ),
    "a service down is not a target down": (
        "LLMTargetDown",
        [(_vllm("up"), "0x10")],
        "2m",
        [],
    ),
}


def _all_up_but(job: str) -> list[tuple[str, str]]:
    series = []
    for target in TARGETS:
        if target.job != job:
            labels = ", ".join(f'{k}="{v}"' for k, v in sorted(target.labels.items()))
            series.append((f'up{{job="{target.job}", {labels}}}', "1x10"))
    return series


CASES["GPU exporter not scraped: fires"] = (
    "LLMTargetMissing",
    _all_up_but("llmhost-gpu"),
    "2m",
    [
        (
            {"job": "llmhost-gpu", "host": HOST, "target": "127.0.0.1:9835"},
            f"{HOST}: Prometheus does not scrape llmhost-gpu at 127.0.0.1:9835",
        )
    ],
)
CASES["every target scraped: fine"] = ("LLMTargetMissing", _all_up_but("none"), "2m", [])


def _test_doc(case: str, cases: dict[str, Case]) -> dict[str, Any]:
    alert, series, eval_time, expected = cases[case]
    return {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                "name": case,
                "interval": "15s",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "alert_rule_test": [
                    {
                        "eval_time": eval_time,
                        "alertname": alert,
                        "exp_alerts": [
                            {
                                "exp_labels": _labels(alert, **labels),
                                "exp_annotations": {"summary": summary},
                            }
                            for labels, summary in expected
                        ],
                    }
                ],
            }
        ],
    }


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    names = {r["alert"] for r in alerts.rules(SETTINGS, PLAN, TARGETS)["groups"][0]["rules"]}
    firing = {alert for alert, _, _, expected in CASES.values() if expected}
    quiet = {alert for alert, _, _, expected in CASES.values() if not expected}
    assert names == firing == quiet


@pytest.mark.parametrize("case", list(CASES))
def test_promtool_test_rules(rules_dir: Path, case: str) -> None:
    (rules_dir / "test.yml").write_text(yaml.safe_dump(_test_doc(case, CASES), sort_keys=False))
    result = _promtool("test", "rules", "test.yml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr


# Two GPUs of other sizes: coder and general on GPU 0 (the H200 of 100 GiB), general-2 on
# GPU 1 (an L40S of 48 GiB); GPU 2 holds no service.
TWO_GPUS = AppliedPlan(
    gpu=True,
    gpus=[
        AppliedGpu(index=0, uuid="GPU-1", total_bytes=TOTAL),
        AppliedGpu(index=1, uuid="GPU-2", total_bytes=48 * GIB),
        AppliedGpu(index=2, uuid="GPU-3", total_bytes=48 * GIB),
    ],
    gpu_memory_cap=0.9,
    services={
        "coder": _service("coder", 8001, 0.55),
        "general": _service("general", 8002, 0.30).model_copy(update={"replica_of": "general"}),
        "general-2": _service("general-2", 8003, 0.85, gpu=1).model_copy(
            update={"replica_of": "general"}
        ),
    },
)
GPU1 = {"gpu": "1", "uuid": "GPU-2", "name": "NVIDIA L40S"}
L40S = "GPU 1 (NVIDIA L40S, GPU-2)"
# 42 GiB is over 0.85 of the L40S (40.8 GiB), far under 0.85 of the H200 or the fractions' sum.
TWO_GPU_CASES: dict[str, Case] = {
    "general-2 over its share of GPU 1: fires": (
        "LLMServiceGPUOverPlan",
        [
            (_process(GPU0, 7, "coder"), f"{55 * GIB}x20"),
            (_process(GPU0, 8, "general"), f"{30 * GIB}x20"),
            (_process(GPU1, 9, "general-2"), f"{42 * GIB}x20"),
        ],
        "3m",
        [
            (
                {"host": HOST, "service": "general-2", **GPU1},
                f"{HOST}: general-2 uses 42GiB of {L40S}, over its plan (0.850 of it) + 512 MiB",
            )
        ],
    ),
    "each replica within its own GPU's plan: fine": (
        "LLMServiceGPUOverPlan",
        [
            (_process(GPU0, 8, "general"), f"{30 * GIB}x20"),
            (_process(GPU1, 9, "general-2"), f"{40 * GIB}x20"),
        ],
        "3m",
        [],
    ),
    "GPU 1 over its services' plan: fires": (
        "LLMGPUOverPlan",
        [(_gpu("used", GPU0), f"{85 * GIB}x20"), (_gpu("used", GPU1), f"{42 * GIB}x20")],
        "3m",
        [
            (
                {"host": HOST, **GPU1},
                f"{HOST}: {L40S} has 42GiB in use, over the plan of its services (0.850 of it) "
                "+ 512 MiB",
            )
        ],
    ),
    "a GPU without a service, full: not ours": (
        "LLMGPUHeadroomLow",
        [(_gpu("free", {"gpu": "2", "uuid": "GPU-3", "name": "NVIDIA L40S"}), f"{GIB}x20")],
        "3m",
        [],
    ),
    "GPU 1 short of headroom: fires": (
        "LLMGPUHeadroomLow",
        [(_gpu("free", GPU1), f"{GIB}x20")],
        "3m",
        [
            (
                {"host": HOST, **GPU1},
                f"{HOST}: {L40S} has 1GiB free, below llmhost_gpu_headroom_gib (2.0 GiB)",
            )
        ],
    ),
}


def test_two_gpus_have_rules_per_gpu_and_unit() -> None:
    rules = alerts.gpu_rules(SETTINGS, TWO_GPUS)
    assert [(r["alert"], r["labels"].get("service")) for r in rules] == [
        ("LLMServiceGPUOverPlan", "coder"),
        ("LLMServiceGPUOverPlan", "general"),
        ("LLMGPUOverPlan", None),
        ("LLMServiceGPUOverPlan", "general-2"),
        ("LLMGPUOverPlan", None),
        ("LLMGPUHeadroomLow", None),
    ]


@pytest.mark.parametrize("case", list(TWO_GPU_CASES))
def test_promtool_test_rules_on_two_gpus(tmp_path: Path, case: str) -> None:
    found = scrape.targets(SETTINGS, TWO_GPUS, HOST)
    (tmp_path / "rules.yml").write_text(alerts.rules_file(SETTINGS, TWO_GPUS, found))
    doc = _test_doc(case, TWO_GPU_CASES)
    (tmp_path / "test.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    result = _promtool("test", "rules", "test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
