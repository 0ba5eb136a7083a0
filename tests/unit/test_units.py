"""The prod units rendered from prod data: systemd accepts them, the flags are planned ones,
and no secret is in them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from llmhost.layout import DEVICES_UNIT, UNIT_DIR, Layout
from llmhost.plan.catalogue import resolve
from llmhost.plan.planner import Gpu, HostPlan, plan_services
from llmhost.render import render
from llmhost.service import units
from llmhost.settings import DEPLOY_ENV, Settings, group_settings

ROOT = Path(__file__).resolve().parents[2]
GB = 10**9
# /proc/devices' character majors of the NVIDIA driver: 580.159.04 (the GPU test machine,
# ../shared/gpu/guest/README.md), and older drivers that named major 195 nvidia-frontend.
PROC_DEVICES = {
    "580": {"nvidia": 195, "nvidiactl": 195, "nvidia-uvm": 238, "nvidia-nvswitch": 239,
            "nvidia-nvlink": 240, "nvidia-caps": 241, "nvidia-caps-imex-channels": 242},
    "older": {"nvidia-frontend": 195, "nvidia-uvm": 243, "nvidia-caps": 244},
}  # fmt: skip
# The names of what CUDA opens (/dev/nvidia0..N, nvidiactl, nvidia-uvm, nvidia-caps/*), each
# allowed by its own name, not through another name that happens to share its major.
NEEDED = {
    "580": {"nvidia", "nvidiactl", "nvidia-uvm", "nvidia-caps"},
    "older": {"nvidia-frontend", "nvidia-uvm", "nvidia-caps"},
}


@pytest.fixture(scope="module")
def prod() -> tuple[Settings, HostPlan, dict]:
    # prod as shipped, no edits: the primary stack, pinned by the catalogue.
    settings = group_settings(ROOT, "prod")
    metas = {svc.name: resolve(svc.model) for svc in settings.services}
    return settings, plan_services(settings, 80 * GB, metas), metas


@pytest.fixture(scope="module")
def rendered(prod, tmp_path_factory) -> dict[str, tuple[str, str]]:
    settings, plan, metas = prod
    out = {}
    for svc in settings.services:
        ctx = units.context(settings, svc, metas[svc.name], plan)
        out[svc.name] = (render("service/vllm.service.j2", ctx), render("service/vllm.env.j2", ctx))
    return out


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_prod_units(prod, rendered, tmp_path) -> None:
    settings, _, _ = prod
    # A root with systemd's own units, the venv's entry point and the shell the health wait and
    # the device oneshot run, so verify can resolve them all.
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    layout = Layout(settings)
    for path in (layout.release.lstrip("/") + "/bin/vllm", "bin/sh"):
        exe = tmp_path / path
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    unit_dir = tmp_path / UNIT_DIR.lstrip("/")
    unit_dir.mkdir(parents=True)
    (unit_dir / DEVICES_UNIT).write_text(units.devices_unit())
    names = [DEVICES_UNIT]
    for svc in settings.services:
        (unit_dir / layout.unit_name(svc)).write_text(rendered[svc.name][0])
        names.append(layout.unit_name(svc))
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={tmp_path}", *names],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def _directives(unit: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(f"{key}=")]


def test_units_start_one_at_a_time_at_boot_and_never_stop_each_other(prod, rendered) -> None:
    settings, _, _ = prod
    layout = Layout(settings)
    previous: list[str] = []
    for svc in settings.services:
        unit = rendered[svc.name][0]
        # Each after (and wanting) the device nodes and the service before it: systemd starts
        # it once that one's start job ended, which the health wait holds until /health 200.
        want = [DEVICES_UNIT, *previous[-1:]]
        assert _directives(unit, "After") == ["network-online.target", *want], unit
        assert _directives(unit, "Wants") == ["network-online.target", *want], unit
        wait = _directives(unit, "ExecStartPost")
        assert (
            len(wait) == 1 and f"-fsS -o /dev/null --max-time 5 {layout.health_url(svc)}" in wait[0]
        )
        assert "until curl" in wait[0] and wait[0].startswith("/bin/sh -c ")
        # A crash ends the wait (systemd would hold the start until TimeoutStartSec).
        assert "kill -0 $$MAINPID 2>/dev/null || exit 1" in wait[0]
        assert _directives(unit, "TimeoutStartSec") == [str(settings.health_timeout_s)]
        # A crash-restart of one must never take another down.
        for key in ("Requires", "Requisite", "BindsTo", "PartOf", "PropagatesStopTo"):
            assert not _directives(unit, key), (svc.name, key)
        previous.append(layout.unit_name(svc))


def test_device_nodes_oneshot_runs_nvidia_modprobe_as_root_where_there_is_one() -> None:
    unit = units.devices_unit()
    assert _directives(unit, "Type") == ["oneshot"] and "User" not in unit
    assert _directives(unit, "RemainAfterExit") == ["yes"]
    assert _directives(unit, "ExecStart") == ["/bin/sh -c 'exec nvidia-modprobe -u -c=0'"]
    assert _directives(unit, "ExecCondition") == [
        "/bin/sh -c 'command -v nvidia-modprobe >/dev/null'"
    ]


def test_cpu_units_have_no_device_oneshot(tmp_path) -> None:
    lab = group_settings(ROOT, "lab")
    assert not lab.gpu
    second = lab.services[1]
    # On CPU hosts every service follows the one before it (they share the host's cores).
    plan = HostPlan(mode="cpu", services={}, verdict="")
    assert units.started_after(lab, lab.services[0], plan) == []
    assert units.started_after(lab, second, plan) == [Layout.unit_name(lab.services[0])]


def test_env_keeps_home_and_caches_in_the_cache_dir_and_cuda_in_pci_order(prod, rendered) -> None:
    settings, _, _ = prod
    for _, env in rendered.values():
        values = dict(
            line.split("=", 1)
            for line in env.splitlines()
            if "=" in line and not line.startswith("#")
        )
        assert values["HOME"] == settings.cache_dir
        assert values["XDG_CONFIG_HOME"].startswith(settings.cache_dir + "/")
        assert values["NUMBA_CACHE_DIR"].startswith(settings.cache_dir + "/")
        assert values["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


@pytest.mark.parametrize("driver", sorted(PROC_DEVICES))
def test_device_allow_names_match_what_drivers_name_in_proc_devices(prod, rendered, driver) -> None:
    # systemd matches char-NAME against /proc/devices by exact name: a name no driver uses
    # allows nothing, silently.
    names = PROC_DEVICES[driver]
    exporter = (ROOT / "llmhost/monitoring/gpu-exporter.service.j2").read_text()
    for unit in [exporter, *(u for u, _ in rendered.values())]:
        allowed = [a.split()[0].removeprefix("char-") for a in _directives(unit, "DeviceAllow")]
        assert set(allowed) <= set(PROC_DEVICES["580"]) | set(PROC_DEVICES["older"]), allowed
        assert NEEDED[driver] <= set(allowed) and NEEDED[driver] <= set(names), (driver, allowed)


def test_units_carry_the_planned_flags(prod, rendered) -> None:
    settings, plan, _ = prod
    for svc in settings.services:
        unit = rendered[svc.name][0]
        fraction = plan.services[svc.name].gpu_memory_utilization
        assert f"--gpu-memory-utilization {fraction:.3f}" in unit
        assert f"--max-model-len {svc.max_model_len}" in unit
        assert f"--max-num-seqs {svc.max_num_seqs}" in unit
        assert f"--max-num-batched-tokens {svc.max_num_batched_tokens}" in unit
        assert f"--served-model-name {svc.served_model_name}" in unit
        assert f"--host 127.0.0.1 --port {svc.port}" in unit
        assert "--quantization awq_marlin" in unit
        assert "Restart=always" in unit
        assert f"User={settings.user}" in unit
    total = sum(p.gpu_memory_utilization or 0 for p in plan.services.values())
    assert total <= settings.gpu_memory_cap


def test_no_secret_and_no_removed_flag_in_units(rendered) -> None:
    for unit, env in rendered.values():
        for text in (unit, env):
            assert "VLLM_API_KEY=" not in text
            assert "--api-key" not in text
            assert "HF_TOKEN" not in text
            # Flags that make current vLLM exit (FACTS.md).
            assert "--disable-log-requests" not in text
            assert "--swap-space" not in text
            assert "VLLM_USE_V1" not in text
        assert "HF_HUB_OFFLINE=1" in env
        assert "VLLM_NO_USAGE_STATS=1" in env


def test_lab_env_pins_threads_and_sizes_the_cpu_kv_cache(tmp_path) -> None:
    from llmhost.plan.catalogue import from_local_dir
    from llmhost_lab import tinymodel

    lab = group_settings(ROOT, "lab")
    # The lab's services on tiny models made here (a fresh machine has no lab cache).
    services = [
        svc.model_copy(update={"model": svc.model.model_copy(update={"path": str(path)})})
        for svc in lab.services
        for path in [tinymodel.ensure(tmp_path / svc.name, seed=1)]
    ]
    settings = lab.model_copy(update={"services": services})
    metas = {s.name: from_local_dir(s.model.path) for s in settings.services}
    plan = plan_services(settings, None, metas)
    for svc in settings.services:
        ctx = units.context(settings, svc, metas[svc.name], plan)
        env = render("service/vllm.env.j2", ctx)
        unit = render("service/vllm.service.j2", ctx)
        assert f"VLLM_CPU_KVCACHE_SPACE={plan.services[svc.name].cpu_kv_cache_gib}" in env
        assert f"VLLM_CPU_OMP_THREADS_BIND={svc.cpu_threads_bind}" in env
        # The whole service on its core: the lab's engine runs the model in-process.
        assert f"\nCPUAffinity={svc.cpu_threads_bind}\n" in unit
        assert "\nVLLM_ENABLE_V1_MULTIPROCESSING=0\n" in env
        assert "-m vllm.entrypoints.openai.api_server --model" in unit
        assert "--gpu-memory-utilization" not in unit
        assert "--enforce-eager" in unit


def test_the_deploys_own_environment_is_what_env_may_not_override() -> None:
    # DEPLOY_ENV (settings) and the env file's template name the same variables.
    template = (ROOT / "llmhost/service/vllm.env.j2").read_text()
    assert set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", template, re.M)) | {"VLLM_API_KEY"} == set(
        DEPLOY_ENV
    )


def test_a_services_env_goes_into_its_env_file(prod) -> None:
    settings, plan, metas = prod
    svc = settings.services[0].model_copy(update={"env": {"VLLM_USE_FLASHINFER_SAMPLER": "0"}})
    env = render("service/vllm.env.j2", units.context(settings, svc, metas[svc.name], plan))
    assert "\nVLLM_USE_FLASHINFER_SAMPLER=0\n" in env


def _replicated(settings: Settings, name: str, **spec: object) -> Settings:
    services = [s.model_copy(update=spec) if s.name == name else s for s in settings.services]
    return settings.model_validate({**settings.model_dump(), "services": services})


def test_replicas_are_units_of_their_own_each_on_its_gpu(prod) -> None:
    settings, _, metas = prod
    settings = _replicated(settings, "general", replicas=2)
    gpus = [Gpu(index=i, total_bytes=48 * GB, uuid=f"GPU-{i}0000000-0000-0000-0000-000000000000")
            for i in range(3)]  # fmt: skip
    plan = plan_services(settings, gpus, metas)
    layout = Layout(settings)
    general = settings.service("general")
    found = {}
    for svc in settings.instances:
        ctx = units.context(settings, svc, metas[svc.service_name], plan)
        found[layout.unit_name(svc)] = (
            render("service/vllm.service.j2", ctx), render("service/vllm.env.j2", ctx)
        )  # fmt: skip
    # Replica 1 keeps the service's unit and env file.
    assert list(found) == [
        "llmhost-coder.service", "llmhost-general.service", "llmhost-general-2.service"
    ]  # fmt: skip
    for n, name, devices in ((1, "general", "GPU-10000000"), (2, "general-2", "GPU-20000000")):
        unit, env = found[f"llmhost-{name}.service"]
        assert f"--port {general.port + n - 1} " in unit
        assert f"--served-model-name {general.served_model_name} " in unit
        assert f"CUDA_VISIBLE_DEVICES={devices}" in env
        # Each alone on its GPU: started at once, after the device nodes only.
        assert _directives(unit, "After") == ["network-online.target", DEVICES_UNIT]
        assert f"{settings.config_dir}/{name}.env" in unit


def test_lab_replicas_each_bind_their_core_and_start_one_after_the_other(tmp_path) -> None:
    from llmhost.plan.catalogue import from_local_dir
    from llmhost_lab import tinymodel

    lab = group_settings(ROOT, "lab")
    model = str(tinymodel.ensure(tmp_path / "tiny", seed=1))
    services = [
        svc.model_copy(update={"model": svc.model.model_copy(update={"path": model})})
        for svc in lab.services
    ]
    one = lab.model_copy(update={"services": services})
    settings = _replicated(one, "general", replicas=2, cpu_threads_bind=["1", "0"])
    metas = {s.name: from_local_dir(model) for s in settings.services}

    def files(settings: Settings) -> dict[str, tuple[str, str]]:
        plan = plan_services(settings, None, metas)
        contexts = {
            (svc.name, svc.port): units.context(settings, svc, metas[svc.service_name], plan)
            for svc in settings.instances
        }
        return {
            name: (render("service/vllm.service.j2", c), render("service/vllm.env.j2", c))
            for name, c in contexts.items()
        }

    rendered = files(settings)
    assert list(rendered) == [("coder", 8001), ("general", 8002), ("general-2", 8003)]
    binds = [env.split("OMP_THREADS_BIND=")[1][0] for _, env in rendered.values()]
    assert binds == ["0", "1", "0"]
    # On the CPU each unit waits for the one before it, as the services did.
    afters = [_directives(unit, "After")[1:] for unit, _ in rendered.values()]
    assert afters == [[], ["llmhost-coder.service"], ["llmhost-general.service"]]
    # Scaling general out adds a unit and changes none: the deploy restarts no unit that serves.
    assert files(one) == {k: v for k, v in rendered.items() if k[0] != "general-2"}


@pytest.mark.parametrize(
    ("bind", "affinity"),
    [("0", "0"), ("0-3,8", "0-3,8"), ("0-31|32-63", "0-31,32-63"), ("auto", None), (None, None)],
)
def test_cpu_threads_bind_is_the_units_cpu_affinity(bind: str | None, affinity: str | None) -> None:
    svc = group_settings(ROOT, "lab").service("coder").model_copy(update={"cpu_threads_bind": bind})
    assert units.cpu_affinity(svc) == affinity
