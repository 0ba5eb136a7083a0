"""``llmhost bench --sweep`` without a host: its arguments, the configs and their order, the KV cap
and the fraction pins from an applied plan, the data each deploy gets, the winner, its data line
and the table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from llmhost.applied_plan import AppliedPlan
from llmhost.bench import show
from llmhost.bench import sweep as rules
from llmhost.bench.results import metrics
from llmhost.cli import main as cli
from llmhost.cli.common import Exit
from llmhost.plan.catalogue import resolve
from llmhost.plan.planner import plan_services
from llmhost.settings import OVERRIDES_KEY, Settings, group_settings

ROOT = Path(__file__).resolve().parents[2]
GB = 10**9
PROD = group_settings(ROOT, "prod")


def _applied(settings: Settings = PROD) -> AppliedPlan:
    metas = {svc.name: resolve(svc.model) for svc in settings.services}
    return AppliedPlan.of(settings, plan_services(settings, 80 * GB, metas))


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["max_num_seq=4"], "--sweep max_num_seq=4: write KEY=V1,V2 with KEY one of max_num_seqs"),
        (["max_num_seqs"], "write KEY=V1,V2"),
        (["max_num_seqs=4,x"], "--sweep max_num_seqs=4,x: the values are whole numbers"),
        (["max_num_seqs=0"], "the values are whole numbers"),
        (["max_num_seqs=4", "max_num_seqs=8"], "--sweep max_num_seqs is given twice"),
    ],
)
def test_bad_sweep_arguments_are_refused(given: list[str], message: str) -> None:
    with pytest.raises(rules.SweepError, match=message.replace("(", r"\(")):
        rules.parse(given)


def test_every_combination_the_deployed_one_last() -> None:
    coder = PROD.service("coder")
    assert (coder.max_num_seqs, coder.max_num_batched_tokens) == (32, 8192)
    wanted = rules.parse(["max_num_seqs=32,16", "max_num_batched_tokens=8192,4096"])
    assert [str(c) for c in rules.configs(coder, wanted)] == [
        "max_num_seqs=32 max_num_batched_tokens=4096",
        "max_num_seqs=16 max_num_batched_tokens=8192",
        "max_num_seqs=16 max_num_batched_tokens=4096",
        "max_num_seqs=32 max_num_batched_tokens=8192",
    ]
    # A key not swept keeps the deployed value.
    only = rules.configs(coder, rules.parse(["max_num_seqs=8"]))
    assert only == [rules.Config(8, 8192)]


def test_the_cap_is_what_the_planned_kv_cache_holds_of_the_workload() -> None:
    plan = _applied()
    coder = PROD.service("coder")
    tokens = coder.workload.prompt_tokens + coder.workload.output_tokens
    per_seq = -(-tokens // 16) * 16
    assert rules.workload_cap(plan, coder) == plan.services["coder"].kv_tokens // per_seq
    cap = rules.workload_cap(plan, coder)
    data = {"llmhost_stack": "primary"}
    rules.check(data, "gpu-01", "coder", [rules.Config(cap, 8192)], cap)
    with pytest.raises(rules.SweepError, match=f"holds {cap} sequences of its workload"):
        rules.check(data, "gpu-01", "coder", [rules.Config(cap + 1, 8192)], cap)


def test_a_config_vllm_would_refuse_is_refused_before_any_deploy() -> None:
    with pytest.raises(rules.SweepError, match="max_num_batched_tokens 16 is below max_num_seqs"):
        rules.check({"llmhost_stack": "primary"}, "gpu-01", "coder", [rules.Config(32, 16)], 99)


def test_every_fraction_is_pinned_on_a_gpu_host_and_none_on_a_cpu_host() -> None:
    plan = _applied()
    pins = rules.fraction_pins(plan, PROD)
    assert pins == {
        name: {"gpu_memory_utilization": plan.services[name].gpu_memory_utilization}
        for name in ("coder", "general")
    }
    cpu = Settings.model_validate({**PROD.model_dump(), "gpu": False})
    metas = {svc.name: resolve(svc.model) for svc in cpu.services}
    assert rules.fraction_pins(AppliedPlan.of(cpu, plan_services(cpu, None, metas)), cpu) == {}


def test_each_deploy_carries_the_hosts_own_overrides_with_the_config_on_top() -> None:
    data = {OVERRIDES_KEY: {"coder": {"max_model_len": 8192}, "general": {"port": 9002}}}
    pins = {"general": {"gpu_memory_utilization": 0.3}}
    merged = rules.overrides(data, "coder", rules.Config(16, 4096), pins)
    assert merged == {
        "coder": {"max_model_len": 8192, "max_num_seqs": 16, "max_num_batched_tokens": 4096},
        "general": {"port": 9002, "gpu_memory_utilization": 0.3},
    }
    assert data[OVERRIDES_KEY]["coder"] == {"max_model_len": 8192}, "the host's data changed"
    line = rules.override_line(data, "coder", rules.Config(16, 4096))
    key, _, value = line.partition(" = ")
    assert key == OVERRIDES_KEY
    assert ast.literal_eval(value)["coder"]["max_num_seqs"] == 16
    assert "gpu_memory_utilization" not in value, "a pin is the sweep's, not the answer"


def _tried(seqs: int, goodput_s: float, deployed: bool = False) -> rules.Tried:
    # Ten requests over ten seconds, ``goodput_s`` of them meeting the targets per second.
    good = round(goodput_s * 10)
    records = [[True, 0.1 if i < good else 9.0, 1.0, 8, [10.0] * 7, ""] for i in range(10)]
    raw = {"elapsed_s": 10.0, "requests": records, "restarts": ["0", "0"],
           "kv_cache_peak": 0.5, "preemptions": 0.0, "journal": []}  # fmt: skip
    slo = PROD.service("coder").slo
    found = {n: metrics(raw, slo) for n in ("coder", "general")}
    held = {"general": found["general"]}
    return rules.Tried(rules.Config(seqs, 8192), deployed, True, found, held)


def test_the_best_is_the_most_goodput_and_the_table_gives_its_data_line() -> None:
    results = [_tried(16, 0.5), _tried(64, 0.8), _tried(32, 0.3, deployed=True)]
    results.append(rules.Tried(rules.Config(8, 8192), False, False, error="rolled back: OOM"))
    winner = rules.best(results, "coder")
    assert winner is not None and winner.config == rules.Config(64, 8192)
    line = rules.override_line({}, "coder", winner.config)
    text = show.sweep_table("gpu-01", "coder", 20, results, winner, line)
    assert "best by goodput: max_num_seqs=64 max_num_batched_tokens=8192 (0.80 req/s" in text
    assert f"to deploy it, in the host's group data: {line}" in text
    assert "max_num_seqs=32 max_num_batched_tokens=8192 (deployed)" in text
    assert re.search(r"max_num_seqs=8 max_num_batched_tokens=8192 +not switched", text), text
    assert "!! max_num_seqs=8 max_num_batched_tokens=8192: rolled back: OOM" in text
    doc = rules.to_dict(results, winner, line)
    assert doc["best"] == {"max_num_seqs": 64, "max_num_batched_tokens": 8192}
    assert doc["configs"][0]["during_switch"]["general"]["completed"] == 10


def test_when_the_deployed_config_wins_there_is_nothing_to_change() -> None:
    results = [_tried(16, 0.2), _tried(32, 0.9, deployed=True)]
    winner = rules.best(results, "coder")
    text = show.sweep_table("gpu-01", "coder", 20, results, winner, "x")
    assert "the deployed settings: nothing to change" in text and "group data" not in text


def test_the_sweep_plot_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "sweep.png"
    results = [_tried(16, 0.5), _tried(32, 0.3)]
    show.sweep_plot("gpu-01", "coder", results, PROD.service("coder").slo, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_sweep_option_takes_every_key() -> None:
    args = cli.parser().parse_args(
        ["bench", "inv.py", "--sweep", "max_num_seqs=8,16", "max_num_batched_tokens=512"]
    )
    assert rules.parse(args.sweep) == {"max_num_seqs": [8, 16], "max_num_batched_tokens": [512]}


@pytest.mark.parametrize("services", [[], ["coder", "--service", "general"]])
def test_a_sweep_tunes_exactly_one_named_service(
    services: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "inv.py"
    inventory.write_text('hosts = ["gpu-01"]\n')
    named = ["--service", *services] if services else []
    args = ["bench", str(inventory), *named, "--sweep", "max_num_seqs=8,16",
            "--project-dir", str(tmp_path)]  # fmt: skip
    assert cli.main(args) == Exit.USAGE
    assert "--sweep tunes one service: name it with --service" in capsys.readouterr().err
