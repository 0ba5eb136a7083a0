"""Hosts with several GPUs: where the planner puts each service, tensor parallel's per-GPU
memory, pins, and what the plan CLI, the applied plan, the units and preflight make of it."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_planner import SEVEN_B_CONFIG

from llmhost.applied_plan import AppliedPlan
from llmhost.cli import plan as plan_cli
from llmhost.plan.catalogue import ModelMeta, resolve
from llmhost.plan.planner import (
    CUDA_CONTEXT_BYTES,
    DRIVER_RESERVED_BYTES,
    NCCL_BYTES,
    GiB,
    Gpu,
    HostPlan,
    PlanError,
    ServiceRequest,
    activation_bytes,
    kv_bytes_per_token,
    plan_gpus,
    plan_services,
    tensor_parallel_problem,
)
from llmhost.render import render
from llmhost.service import units, vllm_args
from llmhost.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
GB = 10**9
UUID0 = "GPU-24c93693-1df4-8965-cd32-9f8883599a38"
UUID1 = "GPU-00000000-1df4-8965-cd32-9f8883599a38"


def _settings(**data: Any) -> Settings:
    return Settings.from_host_data({"llmhost_stack": "primary", **data})


def _pins(**pins: list[int | str]) -> dict[str, Any]:
    return {"llmhost_service_overrides": {name: {"gpus": g} for name, g in pins.items()}}


def _plan(sizes: list[int], settings: Settings | None = None, **gpu: Any) -> HostPlan:
    settings = settings or _settings()
    metas = {svc.name: resolve(svc.model) for svc in settings.services}
    gpus = [Gpu(index=i, total_bytes=size, **gpu) for i, size in enumerate(sizes)]
    return plan_services(settings, gpus, metas)


def _where(plan: HostPlan) -> dict[str, tuple[tuple[int, ...], int, float | None]]:
    return {
        name: (svc.gpus, svc.tensor_parallel_size, svc.gpu_memory_utilization)
        for name, svc in plan.services.items()
    }


def test_one_gpu_is_todays_plan() -> None:
    settings = _settings()
    metas = {svc.name: resolve(svc.model) for svc in settings.services}
    one = plan_services(settings, 96 * GB, metas)
    listed = _plan([96 * GB], settings)
    # Same fractions and KV as the single-GPU path, both services on GPU 0, one GPU line.
    assert _where(listed) == {"coder": ((0,), 1, 0.523), "general": ((0,), 1, 0.376)}
    assert {n: s.kv_tokens for n, s in listed.services.items()} == {
        "coder": 114_176,
        "general": 228_976,
    }
    assert listed.services == one.services and listed.verdict == one.verdict
    assert [(g.index, g.fraction_sum, g.services) for g in listed.gpus] == [
        (0, 0.899, ("coder", "general"))
    ]


@pytest.mark.parametrize(
    ("sizes", "where"),
    [
        # Each alone on a card of its own: spread before packing.
        ([48 * GB, 48 * GB], {"coder": ((0,), 1, 0.9), "general": ((1,), 1, 0.9)}),
        ([80 * GB, 80 * GB], {"coder": ((0,), 1, 0.9), "general": ((1,), 1, 0.9)}),
        # No 24 GB card holds either one: each is split over two of them.
        (
            [24 * GB] * 4,
            {"coder": ((0, 1), 2, 0.857), "general": ((2, 3), 2, 0.857)},
        ),
        # general's wishes (4 x 32768 tokens, 21.4 GiB) are more than a 24 GB card holds
        # alone: it goes beside coder on the 80 GB card, as on one 80 GB card.
        ([80 * GB, 24 * GB], {"coder": ((0,), 1, 0.54), "general": ((0,), 1, 0.359)}),
    ],
    ids=["2x48GB", "2x80GB", "4x24GB", "80GB+24GB"],
)
def test_placement(sizes: list[int], where: dict[str, Any]) -> None:
    plan = _plan(sizes)
    assert _where(plan) == where
    for gpu in plan.gpus:
        assert gpu.fraction_sum <= 0.9
        assert gpu.free_bytes >= 2 * GiB  # llmhost_gpu_headroom_gib
        assert set(gpu.services) == {n for n, s in plan.services.items() if gpu.index in s.gpus}
    for svc in plan.services.values():
        assert svc.kv_tokens >= svc.concurrency * svc.max_model_len


def test_the_mixed_host_leaves_the_small_card_empty_and_says_so() -> None:
    plan = _plan([80 * GB, 24 * GB])
    assert [g.services for g in plan.gpus] == [("coder", "general"), ()]
    assert plan.gpus[1].fraction_sum == 0 and plan.fraction_sum is None
    # The 80 GB card carries the same plan it would alone.
    alone = _plan([80 * GB])
    assert plan.services == alone.services


def test_a_smaller_service_takes_the_small_card() -> None:
    # general with 2 sequences fits a 24 GB card alone: it goes there, coder has the 80 GB.
    settings = _settings(llmhost_service_overrides={"general": {"concurrency": 2}})
    assert _where(_plan([80 * GB, 24 * GB], settings)) == {
        "coder": ((0,), 1, 0.9),
        "general": ((1,), 1, 0.88),
    }


def test_two_24gb_cards_split_the_coder_and_refuse_general_in_one_line() -> None:
    with pytest.raises(PlanError) as err:
        _plan([24 * GB, 24 * GB])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("general: no GPU is left for it: coder is split over GPUs 0, 1")
    assert message.endswith("add a GPU, or lower coder's wishes")


def test_a_service_no_gpu_holds_is_refused_with_what_would_fit() -> None:
    # Three 24 GB cards: coder takes two, general alone on the third is 2.8 GiB short.
    with pytest.raises(PlanError) as err:
        _plan([24 * GB] * 3)
    message = str(err.value)
    assert message.startswith(
        "general: no GPU holds it (alone, beside another service, or split with tensor parallel "
        "over free GPUs); alone on GPU 2 (22.4 GiB): general: 4 x 32768-token sequences need "
        "16.0 GiB of KV"
    )
    assert "lower concurrency to 3" in message and "kv_cache_dtype=fp8" in message


def test_tensor_parallel_memory_is_per_gpu() -> None:
    plan = _plan([24 * GB] * 4)
    coder, whole = plan.services["coder"], _plan([96 * GB]).services["coder"]
    # Weights split in two; KV per token halved (8 KV heads, 4 per rank); NCCL on top.
    assert coder.weights_bytes == pytest.approx(whole.weights_bytes / 2, abs=1)
    assert coder.kv_bytes_per_token == whole.kv_bytes_per_token // 2 == 124 * 1024
    assert coder.nccl_bytes == NCCL_BYTES and whole.nccl_bytes == 0
    assert coder.outside_bytes == CUDA_CONTEXT_BYTES + NCCL_BYTES
    assert coder.activation_bytes < whole.activation_bytes
    # The KV a rank holds, in whole blocks of its own bytes per token.
    assert coder.kv_tokens == 70_800
    assert coder.kv_tokens * coder.kv_bytes_per_token <= coder.kv_bytes
    assert "tensor parallel over GPUs 0, 1" in coder.notes[-1]


def test_tensor_parallel_over_unequal_cards_is_planned_on_the_smallest() -> None:
    meta = resolve(_settings().services[0].model)
    req = ServiceRequest(name="coder", meta=meta, max_model_len=16384, concurrency=4)
    pinned = replace(req, gpus=(0, 1))
    mixed = plan_gpus([pinned], [Gpu(0, 80 * GB), Gpu(1, 24 * GB)], headroom_bytes=2 * GiB)
    even = plan_gpus([pinned], [Gpu(0, 24 * GB), Gpu(1, 24 * GB)], headroom_bytes=2 * GiB)
    # vLLM sizes every rank's KV cache to the smallest rank's (get_kv_cache_configs).
    assert mixed.services["coder"] == even.services["coder"]
    assert mixed.gpus[0].free_bytes > mixed.gpus[1].free_bytes


def _meta(**config: int) -> ModelMeta:
    """test_planner's 7B-like model with ``config`` changed."""
    return ModelMeta.from_config({**SEVEN_B_CONFIG, **config}, 4 * GiB)


def test_fewer_kv_heads_than_gpus_are_replicated() -> None:
    meta = _meta(num_key_value_heads=2)
    full = kv_bytes_per_token(meta)
    assert kv_bytes_per_token(meta, tp=2) == full // 2
    # 4 ranks, 2 KV heads: each rank holds one (vLLM's get_num_kv_heads: max(1, 2 // 4)).
    assert kv_bytes_per_token(meta, tp=4) == full // 2 == 2 * 32 * 1 * 128 * 2


def test_activation_splits_the_mlp_not_the_sampler() -> None:
    meta = _meta()
    one, two = activation_bytes(meta, 8192, 32), activation_bytes(meta, 8192, 32, tp=2)
    mlp_share = 8192 * 2 * 3 * 14336 // 2 * 1.05
    assert one - two == pytest.approx(mlp_share, rel=1e-6)


@pytest.mark.parametrize(
    ("config", "tp", "problem"),
    [
        ({}, 2, None),
        ({}, 8, None),
        ({}, 3, "tensor parallel here is over 1, 2, 4 or 8 GPUs"),
        ({"num_attention_heads": 36, "num_key_value_heads": 4}, 8, "36 attention heads"),
        ({"num_attention_heads": 24, "num_key_value_heads": 6}, 4, "6 KV heads and 4 GPUs"),
        (
            {"intermediate_size": 19200, "quantization_config": {"group_size": 128}},
            4,
            "19200 / 4 is not a whole number of its 128-wide quantization groups",
        ),
        ({"intermediate_size": 19200, "quantization_config": {"group_size": 128}}, 2, None),
    ],
    ids=["2", "8", "3", "heads", "kv-heads", "awq-groups", "awq-2"],
)
def test_tensor_parallel_sizes_vllm_accepts(
    config: dict[str, Any], tp: int, problem: str | None
) -> None:
    found = tensor_parallel_problem(_meta(**config), tp)
    assert found == problem if problem is None else problem in (found or "")


def test_deepseek_coder_awq_splits_over_two_not_four() -> None:
    meta = resolve(_settings().services[0].model)
    assert tensor_parallel_problem(meta, 2) is None
    assert "19200 / 4" in (tensor_parallel_problem(meta, 4) or "")


def test_pins_place_services_and_the_rest_goes_around_them() -> None:
    plan = _plan([48 * GB] * 3, _settings(**_pins(coder=[2])))
    assert _where(plan) == {"coder": ((2,), 1, 0.9), "general": ((0,), 1, 0.9)}
    split = _plan([48 * GB] * 3, _settings(**_pins(coder=[0, 1])))
    assert _where(split)["coder"][:2] == ((0, 1), 2)
    assert split.services["general"].gpus == (2,)


def test_pins_by_uuid_resolve_to_indices() -> None:
    settings = _settings(**_pins(coder=[UUID1], general=[UUID1]))
    metas = {svc.name: resolve(svc.model) for svc in settings.services}
    gpus = [Gpu(0, 96 * GB, uuid=UUID0), Gpu(1, 96 * GB, uuid=UUID1)]
    plan = plan_services(settings, gpus, metas)
    assert [plan.services[n].gpus for n in ("coder", "general")] == [(1,), (1,)]
    assert plan.gpus[0].services == () and plan.gpus[1].uuid == UUID1


@pytest.mark.parametrize(
    ("pins", "sizes", "expect"),
    [
        (
            {"coder": [3]},
            [48 * GB, 48 * GB],
            "llmhost_services['coder'].gpus: 3 is not a GPU of this host, which has 0, 1;",
        ),
        (
            {"coder": [UUID0]},
            [48 * GB, 48 * GB],
            f"llmhost_services['coder'].gpus: '{UUID0}' is not a GPU of this host",
        ),
        (
            {"coder": [0, 1], "general": [1]},
            [48 * GB, 48 * GB],
            "llmhost_services['coder'].gpus [0, 1]: tensor parallel shares no GPU, but general",
        ),
        (
            {"coder": [0, 1, 2]},
            [48 * GB] * 3,
            "vLLM cannot split TheBloke/deepseek-coder-33B-instruct-AWQ over 3 GPUs",
        ),
    ],
    ids=["index-not-there", "uuid-not-there", "split-shared", "three-way-split"],
)
def test_bad_pins_are_refused_naming_the_key(
    pins: dict[str, list[int | str]], sizes: list[int], expect: str
) -> None:
    with pytest.raises(PlanError) as err:
        _plan(sizes, _settings(**_pins(**pins)))
    assert expect in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("gpus", "expect"),
    [
        ([0, 0], "0 is listed twice; name each GPU once"),
        ([-1], "-1 is not a GPU; write its nvidia-smi index"),
        (["1"], "'1' is not a GPU"),
        (["GPU-1"], "'GPU-1' is not a GPU"),
        ([], "at least 1 item"),
    ],
)
def test_the_gpus_key_is_validated(gpus: list[Any], expect: str) -> None:
    with pytest.raises(SettingsError) as err:
        _settings(**_pins(coder=gpus))
    assert str(err.value).startswith("host data: llmhost_services['coder'].gpus")
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_the_gpus_key_is_for_gpu_hosts() -> None:
    with pytest.raises(SettingsError, match=r"\['coder'\]: gpus is for GPU hosts"):
        _settings(llmhost_gpu=False, **_pins(coder=[0]))


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    plan_cli.add_arguments(parser)
    code = plan_cli.run(parser.parse_args([*argv, "--project-dir", str(ROOT)]))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_places_the_stack_on_two_48gb_cards(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "--stack", "primary", "--gpu-memory", "48GB,48GB")
    assert code == plan_cli.Exit.FITS
    assert out.startswith("== stack primary (what-if), GPUs 44.7 + 44.7 GiB ==\n")
    assert "GPU 0 (44.7 GiB): coder; fractions sum to 0.900 (cap 0.90)" in out
    assert "GPU 1 (44.7 GiB): general; fractions sum to 0.900 (cap 0.90)" in out
    code, out, _ = _cli(capsys, "--stack", "primary", "--gpu-memory", "48GB,48GB", "--json")
    host = json.loads(out)["hosts"]["what-if"]
    assert [(g["index"], g["services"]) for g in host["gpus"]] == [(0, ["coder"]), (1, ["general"])]
    coder = host["services"]["coder"]
    assert (coder["gpus"], coder["tensor_parallel_size"]) == ([0], 1)


def test_cli_json_carries_tensor_parallel(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--stack", "primary", "--gpu-memory", "24GB,24GB,24GB,24GB", "--json"]
    code, out, _ = _cli(capsys, *argv)
    coder = json.loads(out)["hosts"]["what-if"]["services"]["coder"]
    assert code == plan_cli.Exit.FITS
    assert (coder["gpus"], coder["tensor_parallel_size"]) == ([0, 1], 2)
    assert coder["outside_fraction"]["nccl_gib"] == 0.5


def test_cli_refuses_two_24gb_cards_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "--stack", "primary", "--gpu-memory", "24GB,24GB")
    assert code == plan_cli.Exit.DOES_NOT_FIT and out == ""
    assert err.count("\n") == 1
    assert err.startswith("llmhost plan: stack primary (what-if): refused: general: no GPU")


def test_cli_one_size_per_gpu_each_with_a_unit(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, "--stack", "primary", "--gpu-memory", "48GB,48")
    assert code == plan_cli.Exit.BAD_INPUT and "'48': give a size with a unit" in err


def test_the_applied_plan_keeps_each_services_gpus() -> None:
    settings = _settings()
    plan = _plan([24 * GB] * 4, settings)
    applied = AppliedPlan.of(settings, plan)
    again = AppliedPlan.from_json(applied.to_json(), "gpu-01: plan.json")
    assert [(s.gpus, s.tensor_parallel_size) for s in again.services.values()] == [
        ([0, 1], 2),
        ([2, 3], 2),
    ]
    # A plan written before there were several GPUs still reads.
    old = json.loads(applied.to_json())
    for svc in old["services"].values():
        del svc["gpus"], svc["tensor_parallel_size"]
    before = AppliedPlan.from_json(json.dumps(old), "gpu-01: plan.json")
    assert before.services["coder"].tensor_parallel_size == 1


def _rendered(plan: HostPlan, settings: Settings) -> dict[str, tuple[str, str]]:
    metas = {svc.name: resolve(svc.model) for svc in settings.services}
    out = {}
    for svc in settings.services:
        ctx = units.context(settings, svc, metas[svc.name], plan)
        out[svc.name] = (render("service/vllm.service.j2", ctx), render("service/vllm.env.j2", ctx))
    return out


def _env(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key: value for key, value in pairs if not key.startswith("#")}


def test_units_see_their_own_gpus_by_uuid_and_split_with_the_flag() -> None:
    settings = _settings()
    gpus = [Gpu(i, 24 * GB, uuid=f"GPU-0000000{i}-1df4-8965-cd32-9f8883599a38") for i in range(4)]
    metas = {svc.name: resolve(svc.model) for svc in settings.services}
    rendered = _rendered(plan_services(settings, gpus, metas), settings)
    coder_unit, coder_env = rendered["coder"]
    assert _env(coder_env)["CUDA_VISIBLE_DEVICES"] == f"{gpus[0].uuid},{gpus[1].uuid}"
    assert _env(rendered["general"][1])["CUDA_VISIBLE_DEVICES"] == f"{gpus[2].uuid},{gpus[3].uuid}"
    assert _env(coder_env)["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert "--gpu-memory-utilization 0.857 --tensor-parallel-size 2 " in coder_unit
    # On GPUs of their own the services start at once: no ordering between them.
    general_unit = rendered["general"][0]
    assert "llmhost-coder.service" not in general_unit


def test_units_by_index_where_the_uuid_is_unknown_and_ordered_where_they_share() -> None:
    settings = _settings()
    rendered = _rendered(_plan([80 * GB, 24 * GB], settings), settings)
    for unit, env in rendered.values():
        assert _env(env)["CUDA_VISIBLE_DEVICES"] == "0"
        assert "--tensor-parallel-size" not in unit
    # Sharing GPU 0, general starts after coder (After= and Wants=).
    assert "After=llmhost-coder.service\nWants=llmhost-coder.service\n" in rendered["general"][0]


@pytest.mark.parametrize("flag", ["--tensor-parallel-size=2", "--tensor_parallel_size", "-tp"])
def test_extra_args_may_not_set_tensor_parallel(flag: str) -> None:
    [problem] = vllm_args.problems([flag, "2"], set())
    assert "is planned by the deploy" in problem


def test_the_budget_of_each_gpu_is_its_own() -> None:
    plan = _plan([80 * GB, 24 * GB])
    small = 24 * GB - DRIVER_RESERVED_BYTES
    assert plan.gpus[1].budget_bytes == min(int(0.9 * small), small - 2 * GiB)
    assert plan.budget_bytes == sum(g.budget_bytes for g in plan.gpus)
