"""The GPU exporter without a GPU: NVML-shaped readings in, Prometheus text out."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from llmhost.monitoring import gpu_exporter as ge

GIB = 1024**3
# /proc/<pid>/cgroup of vLLM's engine core under systemd: unified (v2), then a v1 hybrid host.
V2 = "0::/system.slice/llmhost-coder.service\n"
V1 = (
    "12:memory:/system.slice/llmhost-general.service\n"
    "1:name=systemd:/system.slice/llmhost-general.service\n"
    "0::/system.slice/llmhost-general.service\n"
)
GPU = ge.GpuReading(
    index=0,
    uuid="GPU-abc",
    name="NVIDIA H200",
    memory_total=140 * GIB,
    memory_used=120 * GIB,
    memory_free=20 * GIB,
    utilization=0.37,
    temperature=41.0,
    power=None,  # not supported on this board
    processes={844: 77 * GIB, 877: 42 * GIB, 900: None, 901: GIB},
)
SERVICES = {844: "coder", 877: "general"}


@pytest.mark.parametrize(
    ("text", "service"),
    [
        (V2, "coder"),
        (V1, "general"),
        ("0::/user.slice/user-0.slice/session-3.scope\n", None),
        # A unit whose name only starts like ours is not ours.
        ("0::/system.slice/llmhost-coder.service.d\n", None),
        ("0::/system.slice/llmhost-gpu-exporter.service\n", "gpu-exporter"),
        ("", None),
    ],
)
def test_service_of_cgroup(text: str, service: str | None) -> None:
    assert ge.service_of_cgroup(text) == service


def test_service_of_a_gone_pid_is_none(tmp_path) -> None:
    assert ge.service_of_pid(12345, proc=str(tmp_path)) is None
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text(V2)
    assert ge.service_of_pid(7, proc=str(tmp_path)) == "coder"


def _scrape(read) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(ge.NvmlCollector(read, SERVICES.get))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_per_gpu_and_per_process_memory_with_services() -> None:
    got = _scrape(lambda: [GPU])
    gpu = (("gpu", "0"), ("name", "NVIDIA H200"), ("uuid", "GPU-abc"))
    assert got[(ge.UP, ())] == 1
    assert got[(ge.MEMORY_TOTAL, gpu)] == 140 * GIB
    assert got[(ge.MEMORY_USED, gpu)] == 120 * GIB
    assert got[(ge.MEMORY_FREE, gpu)] == 20 * GIB
    assert got[(ge.UTILIZATION, gpu)] == pytest.approx(0.37)
    assert got[(ge.TEMPERATURE, gpu)] == 41
    # Not supported: not exported, rather than exported as 0.
    assert not [key for key in got if key[0] == ge.POWER]
    procs = {
        dict(labels)["pid"]: (dict(labels)["service"], value)
        for (name, labels), value in got.items()
        if name == ge.PROCESS_MEMORY
    }
    # 900: NVML withholds its usage; 901: not a service of ours.
    assert procs == {"844": ("coder", 77 * GIB), "877": ("general", 42 * GIB), "901": ("", GIB)}


def test_a_failed_nvml_read_is_a_metric_not_a_crash() -> None:
    def broken() -> list[ge.GpuReading]:
        raise RuntimeError("NVML_ERROR_GPU_IS_LOST")

    assert _scrape(broken) == {(ge.UP, ()): 0}


def test_service_pid_flags() -> None:
    assert ge.parse_service_pids(["coder=844", "general=877"]) == {844: "coder", 877: "general"}
    with pytest.raises(ValueError, match="write SERVICE=PID"):
        ge.parse_service_pids(["coder:844"])


def test_without_nvidia_ml_py_it_loads_vllms_vendored_copy_alone(tmp_path, monkeypatch) -> None:
    vendored = tmp_path / "vllm" / "third_party"
    vendored.mkdir(parents=True)
    # Importing vLLM itself would import torch: the loader must not.
    (tmp_path / "vllm" / "__init__.py").write_text("raise ImportError('vllm was imported')\n")
    # As vLLM's copy does at import (_extractNVMLErrorsAsClasses): it finds itself by name.
    (vendored / "pynvml.py").write_text("import sys\nVENDORED = sys.modules[__name__] and True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)  # not installed
    ge.nvml.cache_clear()
    try:
        assert ge.nvml().VENDORED is True
    finally:
        ge.nvml.cache_clear()
