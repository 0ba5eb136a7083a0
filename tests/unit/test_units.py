"""The prod units rendered from prod data: systemd accepts them, the flags are planned ones,
and no secret is in them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from llmhost import units
from llmhost.catalogue import resolve
from llmhost.layout import UNIT_DIR, Layout
from llmhost.planner import HostPlan, plan_services
from llmhost.settings import Settings, group_settings

ROOT = Path(__file__).resolve().parents[2]
GB = 10**9


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
        out[svc.name] = (units.render("vllm.service.j2", ctx), units.render("vllm.env.j2", ctx))
    return out


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_prod_units(prod, rendered, tmp_path) -> None:
    settings, _, _ = prod
    # A root with systemd's own units and the venv's entry point, so verify can resolve both.
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    layout = Layout(settings)
    exe = tmp_path / layout.release.lstrip("/") / "bin/vllm"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit_dir = tmp_path / UNIT_DIR.lstrip("/")
    unit_dir.mkdir(parents=True)
    names = []
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
    from llmhost.catalogue import from_local_dir
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
        env = units.render("vllm.env.j2", ctx)
        unit = units.render("vllm.service.j2", ctx)
        assert f"VLLM_CPU_KVCACHE_SPACE={plan.services[svc.name].cpu_kv_cache_gib}" in env
        assert f"VLLM_CPU_OMP_THREADS_BIND={svc.cpu_threads_bind}" in env
        assert "-m vllm.entrypoints.openai.api_server --model" in unit
        assert "--gpu-memory-utilization" not in unit
        assert "--enforce-eager" in unit
