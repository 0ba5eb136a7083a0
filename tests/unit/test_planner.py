from __future__ import annotations

import argparse
import json
import math
import os
import runpy
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llmhost.cli import plan as plan_cli
from llmhost.plan.catalogue import ModelMeta, catalogue_entry, from_catalogue, resolve
from llmhost.plan.planner import (
    CPU_BLOCK_SIZE,
    CUDA_CONTEXT_BYTES,
    DRIVER_RESERVED_BYTES,
    GPU_BLOCK_SIZE,
    GiB,
    HostPlan,
    MiB,
    PlanError,
    ServiceRequest,
    kv_bytes_per_token,
    plan_cpu,
    plan_gpu,
    plan_services,
)
from llmhost.settings import Settings, SettingsError
from llmhost.stacks import QWEN_7B, STACKS
from llmhost_lab import lab, tinymodel

KiB = 1 << 10
ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = {
    key: value
    for key, value in runpy.run_path(str(ROOT / "group_data" / "all.py")).items()
    if key.startswith("llmhost_")
}
CARDS = [80 * 10**9, 94 * 10**9, 96 * 10**9]


def _by_repo(repo: str) -> ModelMeta:
    svc = next(s["model"] for stack in STACKS.values() for s in stack if s["model"]["repo"] == repo)
    return from_catalogue(svc["repo"], svc["revision"])


@pytest.mark.parametrize(
    ("repo", "kib"),
    [
        ("TheBloke/deepseek-coder-33B-instruct-AWQ", 248),
        ("Qwen/Qwen2.5-Coder-32B-Instruct-AWQ", 256),
        ("Qwen/Qwen2.5-14B-Instruct-AWQ", 192),
        ("Qwen/Qwen2.5-7B-Instruct-AWQ", 56),
        ("TheBloke/Mistral-7B-Instruct-v0.2-AWQ", 128),
    ],
)
def test_kv_bytes_per_token_match_facts(repo: str, kib: int) -> None:
    meta = _by_repo(repo)
    assert kv_bytes_per_token(meta) == kib * KiB
    assert kv_bytes_per_token(meta, "fp8") == kib * KiB // 2


def _settings(stack: str, **data: Any) -> Settings:
    return Settings.from_host_data({**DEFAULTS, "llmhost_stack": stack, **data})


def _plan(settings: Settings, card: int | None):
    metas = {svc.name: resolve(svc.model) for svc in settings.services}
    return plan_services(settings, card, metas)


@pytest.mark.parametrize("stack", list(STACKS))
@pytest.mark.parametrize("card", CARDS)
@pytest.mark.parametrize("concurrency", [1, 2, 4, 8])
def test_fractions_never_exceed_the_cap(stack: str, card: int, concurrency: int) -> None:
    overrides = {name: {"concurrency": concurrency} for name in ("coder", "general")}
    settings = _settings(stack, llmhost_service_overrides=overrides)
    try:
        plan = _plan(settings, card)
    except PlanError as e:
        assert any(k in str(e) for k in ("max_model_len", "concurrency", "kv_cache_dtype"))
        return
    fractions = [svc.gpu_memory_utilization for svc in plan.services.values()]
    assert all(f is not None and round(f, 3) == f for f in fractions)
    assert math.fsum(f or 0 for f in fractions) <= settings.gpu_memory_cap + 1e-9
    assert plan.fraction_sum is not None and plan.fraction_sum <= settings.gpu_memory_cap
    # What the fractions leave of CUDA's total, less each process's context beyond them.
    outside = sum(svc.outside_bytes for svc in plan.services.values())
    cuda_total = card - DRIVER_RESERVED_BYTES
    assert plan.free_bytes is not None
    assert plan.free_bytes >= cuda_total * (1 - settings.gpu_memory_cap) - outside - 1
    for svc in plan.services.values():
        assert svc.max_concurrency >= concurrency
        assert svc.kv_tokens >= concurrency * svc.max_model_len
        assert svc.kv_tokens % GPU_BLOCK_SIZE == 0
        assert svc.kv_cache_memory_bytes == svc.kv_bytes


# A 7B-like model with round numbers: 128 KiB of KV per token, 4 GiB of weights.
SEVEN_B_CONFIG = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_hidden_layers": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 32768,
}
META = ModelMeta.from_config(SEVEN_B_CONFIG, 4 * GiB)


def _req(name: str = "svc", **knobs: Any) -> ServiceRequest:
    return ServiceRequest(name=name, meta=META, **{"max_model_len": 32768, **knobs})


def test_refusal_names_service_numbers_and_every_knob() -> None:
    with pytest.raises(PlanError) as err:
        plan_gpu([_req(concurrency=8, max_num_seqs=8)], 40 * GiB)
    message = str(err.value)
    assert message.startswith("svc: 8 x 32768-token sequences need 32.0 GiB of KV but ")
    assert "lower max_model_len to 29696" in message
    assert "lower concurrency to 7" in message
    assert message.endswith("or use kv_cache_dtype=fp8")


def test_refusal_offers_the_other_service() -> None:
    with pytest.raises(PlanError, match="or lower small's wishes"):
        plan_gpu(
            [_req("big", concurrency=8, max_num_seqs=8), _req("small", max_model_len=4096)],
            40 * GiB,
        )


def test_refusal_when_weights_alone_do_not_fit() -> None:
    heavy = replace(META, weights_bytes=40 * GiB)
    with pytest.raises(PlanError, match=r"svc: weights and overheads .* use a GPU with more"):
        plan_gpu([ServiceRequest(name="svc", meta=heavy, max_model_len=4096)], 40 * GiB)


def test_max_model_len_above_what_vllm_accepts_is_refused() -> None:
    deepseek = _by_repo("TheBloke/deepseek-coder-33B-instruct-AWQ")
    too_long = ServiceRequest(name="coder", meta=deepseek, max_model_len=131072)
    with pytest.raises(
        PlanError, match=r"coder: max_model_len 131072 .* lower max_model_len to 65536"
    ):
        plan_gpu([too_long], 141 * 10**9)
    qwen = _by_repo("Qwen/Qwen2.5-7B-Instruct-AWQ")
    with pytest.raises(PlanError, match="lower max_model_len to 32768"):
        plan_cpu([ServiceRequest(name="general", meta=qwen, max_model_len=65536)])


def test_past_trained_length_fits_with_a_note() -> None:
    deepseek = _by_repo("TheBloke/deepseek-coder-33B-instruct-AWQ")
    plan = plan_gpu([ServiceRequest(name="coder", meta=deepseek, max_model_len=32768)], 96 * GiB)
    assert "not trained that long" in plan.services["coder"].notes[0]


def test_concurrency_above_max_num_seqs_is_refused() -> None:
    with pytest.raises(PlanError, match="raise max_num_seqs to 16"):
        plan_gpu([_req(concurrency=16, max_num_seqs=8)], 80 * GiB)


def test_spare_memory_follows_kv_need() -> None:
    plan = plan_gpu([_req("a", concurrency=2), _req("b", max_model_len=8192)], 80 * GiB)
    a, b = plan.services["a"], plan.services["b"]
    assert a.kv_bytes / (2 * 32768) == pytest.approx(b.kv_bytes / 8192, rel=0.01)
    # Both get the same multiple of what they asked for.
    assert a.max_concurrency / 2 == pytest.approx(b.max_concurrency, rel=0.01)


def test_headroom_and_cap_bound_the_budget() -> None:
    plan = plan_gpu([_req()], 80 * GiB, cap=0.95, headroom_bytes=10 * GiB)
    # Of CUDA's total, the headroom and the process's context stay outside the fractions.
    assert plan.budget_bytes == 80 * GiB - DRIVER_RESERVED_BYTES - 10 * GiB - CUDA_CONTEXT_BYTES
    assert plan.free_bytes is not None and plan.free_bytes >= 10 * GiB
    assert plan.fraction_sum is not None and plan.fraction_sum <= 0.875


def test_eager_drops_cuda_graphs() -> None:
    eager = plan_gpu([_req(enforce_eager=True)], 40 * GiB).services["svc"]
    graphs = plan_gpu([_req()], 40 * GiB).services["svc"]
    assert eager.cuda_graph_bytes == 0 < graphs.cuda_graph_bytes


# The lab's tiny Llama: 2 layers, 2 kv heads, head_dim 64, bf16: 1 KiB of KV per token.
TINY = ModelMeta.from_config(
    {
        "hidden_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "num_hidden_layers": 2,
        "vocab_size": 4096,
        "max_position_embeddings": 2048,
        "torch_dtype": "bfloat16",
    },
    6_600_000,
)


def test_cpu_kv_space_is_whole_gib_and_predicts_vllms_token_count() -> None:
    plan = plan_cpu([ServiceRequest(name="general", meta=TINY, max_model_len=2048, concurrency=4)])
    svc = plan.services["general"]
    assert plan.mode == "cpu" and svc.gpu_memory_utilization is None
    assert svc.cpu_kv_cache_gib == 1
    assert svc.kv_tokens == GiB // (CPU_BLOCK_SIZE * 1024) * CPU_BLOCK_SIZE == 1_048_576


def test_cpu_kv_space_covers_the_wishes() -> None:
    qwen = _by_repo("Qwen/Qwen2.5-7B-Instruct-AWQ")
    plan = plan_cpu([ServiceRequest(name="g", meta=qwen, max_model_len=32768, concurrency=3)])
    # 3 x 32768 x 56 KiB = 5.25 GiB -> 6
    assert plan.services["g"].cpu_kv_cache_gib == 6


def test_cpu_given_space_too_small_is_refused_naming_the_key() -> None:
    qwen = _by_repo("Qwen/Qwen2.5-7B-Instruct-AWQ")
    request = ServiceRequest(name="g", meta=qwen, max_model_len=32768, concurrency=3)
    with pytest.raises(PlanError, match="raise llmhost_cpu_kv_cache_gib to 6"):
        plan_cpu([request], kv_space_gib=2)


def test_adapter_uses_cpu_mode_and_the_given_space() -> None:
    settings = _settings("primary", llmhost_gpu=False, llmhost_cpu_kv_cache_gib=20)
    plan = _plan(settings, None)
    assert {svc.cpu_kv_cache_gib for svc in plan.services.values()} == {20}


def test_adapter_needs_gpu_memory_on_gpu_hosts() -> None:
    with pytest.raises(PlanError, match="--gpu-memory"):
        _plan(_settings("primary"), None)


def test_every_stack_is_pinned_and_plans_without_notes() -> None:
    for name in STACKS:
        plan = _plan(_settings(name), 80 * GiB)
        assert all(svc.notes == () for svc in plan.services.values()), name


def test_plan_to_dict_is_json() -> None:
    plan = _plan(_settings("single-vendor"), 96 * GiB)
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["services"]["coder"]["gpu_memory_utilization"] > 0.5
    assert "total" in plan.render_table() and "verdict: fits" in plan.render_table()


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    plan_cli.add_arguments(parser)
    code = plan_cli.run(parser.parse_args([*argv, "--project-dir", str(ROOT)]))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("stack", list(STACKS))
def test_cli_what_if_fits_at_96gib(capsys: pytest.CaptureFixture[str], stack: str) -> None:
    code, out, _ = _cli(capsys, "--gpu-memory", "96GiB", "--stack", stack)
    assert code == plan_cli.Exit.FITS
    assert "verdict: fits" in out


@pytest.mark.parametrize("stack", list(STACKS))
def test_cli_what_if_at_80gb_fits_or_names_a_knob(
    capsys: pytest.CaptureFixture[str], stack: str
) -> None:
    code, out, err = _cli(capsys, "--gpu-memory", "80GB", "--stack", stack)
    assert code in (plan_cli.Exit.FITS, plan_cli.Exit.DOES_NOT_FIT)
    if code == plan_cli.Exit.FITS:
        assert "verdict: fits" in out
    else:
        assert any(k in err for k in ("max_model_len", "concurrency", "kv_cache_dtype"))


def test_cli_json_parses(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "--gpu-memory", "94GB", "--stack", "primary", "--json")
    data = json.loads(out)
    assert code == data["exit_code"] == 0
    assert data["hosts"]["what-if"]["fits"] is True


def test_cli_json_reports_a_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "--gpu-memory", "40GB", "--stack", "max-quality", "--json")
    data = json.loads(out)
    assert code == data["exit_code"] == plan_cli.Exit.DOES_NOT_FIT
    assert data["hosts"]["what-if"]["fits"] is False


def test_cli_inventory_plans_each_host(tmp_path: Path) -> None:
    # The lab group's tiny models, made in a cache of this test's own (a fresh machine has none).
    cache = tmp_path / "lab-cache"
    for name, seed in lab.MODELS.items():
        tinymodel.ensure(cache / "models" / name, seed=seed, name=name)
    inventory = tmp_path / "prod.py"
    inventory.write_text(
        'gpu = [("a.example", {"llmhost_stack": "max-quality"}), "b.example"]\n'
        'lab = [("c.example", {"llmhost_gpu": False})]\n'
    )
    # A subprocess: loading an inventory imports pyinfra_cli, which gevent-patches its process.
    done = subprocess.run(
        [sys.executable, "-m", "llmhost.cli.main", "plan", str(inventory), "--gpu-memory", "80GB"],
        cwd=ROOT,
        env={**os.environ, "LLMHOST_LAB_CACHE": str(cache)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == plan_cli.Exit.FITS, done.stderr
    for host in ("a.example, GPU", "b.example, GPU", "c.example, CPU"):
        assert f"== host {host}" in done.stdout


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--stack", "primary"], "pass --gpu-memory"),
        (["--stack", "primary", "--gpu-memory", "80"], "with a unit"),
        (["--gpu-memory", "80GB"], "give an inventory file"),
        (["missing.py", "--gpu-memory", "80GB"], "missing.py: no such inventory file"),
    ],
)
def test_cli_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    code, _, err = _cli(capsys, *argv)
    assert code == plan_cli.Exit.BAD_INPUT
    assert needle in err


@pytest.mark.parametrize(
    ("text", "size"), [("80GB", 80 * 10**9), ("96GiB", 96 * GiB), ("141 gb", 141 * 10**9)]
)
def test_parse_size(text: str, size: int) -> None:
    assert plan_cli.parse_size(text) == size


def _fixed(**fractions: float) -> dict[str, Any]:
    return {
        "llmhost_service_overrides": {
            name: {"gpu_memory_utilization": value} for name, value in fractions.items()
        }
    }


def test_a_service_may_fix_its_own_fraction() -> None:
    total = 80 * 10**9
    plan = _plan(_settings("primary", **_fixed(coder=0.5)), total)
    coder, general = plan.services["coder"], plan.services["general"]
    assert coder.gpu_memory_utilization == 0.5
    # The fraction holds weights and overheads, the rest is KV in whole 16-token blocks.
    requested = -(-(total - DRIVER_RESERVED_BYTES) * 500 // 1000)  # vLLM rounds up
    kv = requested - coder.weights_bytes - coder.overhead_bytes
    assert coder.kv_bytes == kv
    assert coder.kv_tokens == kv // (16 * coder.kv_bytes_per_token) * 16
    # The other service is planned in what is left under the cap.
    assert general.gpu_memory_utilization is not None
    assert 0.5 + general.gpu_memory_utilization <= DEFAULTS["llmhost_gpu_memory_cap"]


def test_a_fixed_fraction_short_of_the_wish_is_reported() -> None:
    plan = _plan(_settings("primary", **_fixed(coder=0.4)), 80 * 10**9)
    coder = plan.services["coder"]
    assert coder.max_concurrency < coder.concurrency
    assert "holds" in coder.notes[-1] and "fewer than concurrency 4" in coder.notes[-1]


def test_a_fixed_fraction_without_room_for_one_sequence_is_refused() -> None:
    # 0.3 of an 80 GB card: 22.2 GiB, 19.4 of them weights and overheads, 2.74 GiB of KV where
    # one 16384-token sequence needs 3.88.
    with pytest.raises(PlanError, match=r"coder: gpu_memory_utilization 0.3 .* raise it to 0\.316"):
        _plan(_settings("primary", **_fixed(coder=0.3)), 80 * 10**9)


def test_fixed_fractions_above_the_cap_are_refused() -> None:
    with pytest.raises(PlanError, match=r"own gpu_memory_utilization sum to 0\.950"):
        _plan(_settings("primary", **_fixed(coder=0.5, general=0.45)), 80 * 10**9)


def test_a_fixed_fraction_on_a_cpu_host_is_refused() -> None:
    with pytest.raises(SettingsError, match="gpu_memory_utilization is for GPU hosts"):
        _settings("primary", llmhost_gpu=False, **_fixed(coder=0.5))


def test_cli_plans_a_local_model_directory(capsys, tmp_path: Path) -> None:
    # A checkpoint directory as a user has one: config.json and a safetensors index.
    entry = catalogue_entry(QWEN_7B["repo"], QWEN_7B["revision"])
    assert entry is not None
    (tmp_path / "config.json").write_text(json.dumps(entry["config"]))
    index = {"metadata": {"total_size": entry["weights_bytes"]}, "weight_map": {}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    argv = ["--stack", "single-vendor", "--gpu-memory", "80GB", "--json"]

    code, out, _ = _cli(capsys, *argv, "--model", f"general={tmp_path}")
    local = json.loads(out)["hosts"]["what-if"]["services"]["general"]
    code_catalogue, out_catalogue, _ = _cli(capsys, *argv)
    catalogued = json.loads(out_catalogue)["hosts"]["what-if"]["services"]["general"]
    assert code == code_catalogue == plan_cli.Exit.FITS
    assert local["model"] == str(tmp_path)
    assert {k: v for k, v in local.items() if k != "model"} == {
        k: v for k, v in catalogued.items() if k != "model"
    }


def test_cli_model_names_a_service_of_the_stack(capsys, tmp_path: Path) -> None:
    code, _, err = _cli(
        capsys, "--stack", "primary", "--gpu-memory", "80GB", "--model", f"w={tmp_path}"
    )
    assert code == plan_cli.Exit.BAD_INPUT
    assert "stack primary has services ['coder', 'general'], not 'w'" in err


# vLLM 0.25.0 on the H200 (FACTS.md, "What vLLM's startup memory accounting really charges"):
# the single-vendor shapes with --max-model-len 32768 --max-num-seqs 32
# --max-num-batched-tokens 8192 at fractions 0.633 / 0.266, started one after the other.
H200_SMI_TOTAL = 143771 * MiB
H200_RESERVED = (143771 - 143156) * MiB  # nvidia-smi: total - free on the idle card
MEASURED = {
    # KV GiB vLLM found, its KV tokens, nvidia-smi's per-process MiB at idle.
    "coder": (68.18, 279_248, 90_108),
    "general": (30.46, 570_368, 37_752),
}


def _measured_setup() -> HostPlan:
    knobs = {"max_model_len": 32768, "max_num_seqs": 32, "max_num_batched_tokens": 8192}
    overrides = {
        "coder": {**knobs, "concurrency": 1, "gpu_memory_utilization": 0.633},
        "general": {**knobs, "concurrency": 1, "gpu_memory_utilization": 0.266},
    }
    settings = _settings(
        "single-vendor", llmhost_vllm_version="0.25.0", llmhost_service_overrides=overrides
    )
    metas = {svc.name: resolve(svc.model) for svc in settings.services}
    return plan_services(settings, H200_SMI_TOTAL, metas, gpu_reserved_bytes=H200_RESERVED)


@pytest.mark.parametrize("name", list(MEASURED))
def test_kv_prediction_within_3_percent_under_what_vllm_found(name: str) -> None:
    svc = _measured_setup().services[name]
    kv_gib, kv_tokens, _ = MEASURED[name]
    assert -0.03 <= svc.kv_bytes / GiB / kv_gib - 1 <= 0, svc.kv_bytes / GiB
    assert 0.97 * kv_tokens <= svc.kv_tokens <= kv_tokens


@pytest.mark.parametrize("name", list(MEASURED))
def test_each_process_stays_within_its_planned_memory(name: str) -> None:
    svc = _measured_setup().services[name]
    # Idle: the activation peak is freed after profiling; the context and graphs are on top.
    assert svc.gpu_memory_utilization is not None
    planned = svc.gpu_memory_utilization * (H200_SMI_TOTAL - H200_RESERVED) + svc.outside_bytes
    assert MEASURED[name][2] * MiB <= planned


def test_free_memory_with_both_up_is_not_overstated() -> None:
    # 127,875 of 143,771 MiB in use at idle; each process takes its activation peak back under
    # load (1.61 + 1.13 GiB): about 12.8 GiB stay free then.
    under_load = (143771 - 127875) * MiB - int((1.61 + 1.13) * GiB)
    plan = _measured_setup()
    assert plan.free_bytes is not None and plan.free_bytes <= under_load


def test_terms_are_the_measured_ones() -> None:
    coder = _measured_setup().services["coder"]
    # Weights as loaded 18.49 GiB, activation peak 1.61, non-torch 0.22, context 0.51 (0.25.0).
    assert 18.49 <= coder.weights_bytes / GiB <= 18.49 * 1.02
    assert 1.61 <= coder.activation_bytes / GiB <= 1.61 * 1.1
    assert 0.22 <= coder.non_torch_bytes / GiB <= 0.35
    assert 0.51 <= coder.context_bytes / GiB <= 0.6
    # 0.25.0 takes no graph estimate from the fraction: the graphs come on top of it.
    assert not coder.graphs_inside and coder.outside_bytes > coder.context_bytes
