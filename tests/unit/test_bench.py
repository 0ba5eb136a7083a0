"""``llmhost bench`` without a host: the cases and the driver's spec from host data, the numbers
from the driver's raw records, the JSON, the table and the plot, the command's refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmhost.bench import cases, driver, show
from llmhost.bench.results import Report, Spread, meets, metrics
from llmhost.cli import main as cli
from llmhost.cli.common import Exit
from llmhost.remote import agent
from llmhost.settings import Settings, SettingsError, Slo, group_settings

ROOT = Path(__file__).resolve().parents[2]


def lab(**changes: Any) -> Settings:
    data = group_settings(ROOT, "lab").model_dump()
    return Settings.model_validate({**data, **changes})


def _record(ttft_s: float, gaps_ms: list[float], ok: bool = True, error: str = "") -> list[Any]:
    e2el = ttft_s + sum(gaps_ms) / 1000
    return [ok, ttft_s, e2el, len(gaps_ms) + 1 if ok else 0, gaps_ms, error]


def _raw(records: list[list[Any]], restarts: tuple[str, str] = ("0", "0")) -> dict[str, Any]:
    return {
        "elapsed_s": 10.0,
        "requests": records,
        "restarts": list(restarts),
        "kv_cache_peak": 0.25,
        "preemptions": 0.0,
        "journal": [],
    }


# --- cases and the driver's spec ------------------------------------------------------------


def test_each_service_alone_then_together_each_direct_then_through_the_gateway() -> None:
    names = [c.name for c in cases.cases(["coder", "general"], gateway=True)]
    assert names == [
        "coder alone direct", "coder alone gateway", "general alone direct",
        "general alone gateway", "coder + general co-loaded direct",
        "coder + general co-loaded gateway",
    ]  # fmt: skip


def test_one_service_without_a_gateway_is_one_case() -> None:
    assert [c.name for c in cases.cases(["general"], gateway=False)] == ["general alone direct"]


def test_the_bench_client_is_a_generated_key_without_limits() -> None:
    clients = {"ci": "/tmp/ci.key", "ide": {"models": ["tiny-coder"]}, "lab": None}
    assert cases.bench_client(lab(gateway_clients=clients)) == "lab"
    assert cases.bench_client(lab(gateway_clients={"ci": "/tmp/ci.key"})) is None
    assert cases.bench_client(lab(gateway_rate_limit=60)) is None
    assert cases.bench_client(lab(gateway=False)) is None


def test_the_spec_names_key_files_and_never_a_key() -> None:
    spec = cases.driver_spec(lab(), ["coder", "general"], 10.0, "lab")
    coder = spec["services"]["coder"]
    assert coder["targets"]["direct"] == {
        "url": "http://127.0.0.1:8001/v1/chat/completions",
        "key_file": "/etc/llmhost/api_key.env",
        "concurrency": 4,
    }
    assert coder["targets"]["gateway"] == {
        "url": "https://127.0.0.1:8443/v1/chat/completions",
        "key_file": "/etc/llmhost/gateway-keys/lab",
        "cafile": "/etc/haproxy/llmhost/tls.crt",
        "concurrency": 4,
    }
    assert (coder["unit"], coder["metrics_url"]) == (
        "llmhost-coder.service",
        "http://127.0.0.1:8001/metrics",
    )
    assert (coder["prompt_tokens"], coder["output_tokens"]) == (512, 64)
    assert [c["via"] for c in spec["cases"]].count("gateway") == 3
    # 4 clients x 10 s x 4 cases x 4 requests/s, under the cap.
    assert spec["prompts_per_service"] == 640
    assert "VLLM_API_KEY" not in json.dumps(spec)


def test_through_the_gateway_a_service_is_loaded_up_to_its_cap() -> None:
    settings = lab(
        services=[
            {**svc.model_dump(), "gateway_max_in_flight": 2} if svc.name == "coder" else svc
            for svc in lab().services
        ]
    )
    spec = cases.driver_spec(settings, ["coder"], 5.0, "lab")
    assert spec["services"]["coder"]["targets"]["gateway"]["concurrency"] == 2
    assert spec["services"]["coder"]["targets"]["direct"]["concurrency"] == 4


def test_the_running_python_comes_from_execstart() -> None:
    shown = (
        "{ path=/opt/llmhost/venvs/33123d71b178752c/bin/python ; argv[]=/opt/llmhost/venvs/"
        "33123d71b178752c/bin/python -m vllm.entrypoints.openai.api_server ; status=0/0 }"
    )
    assert cases.exec_python(shown) == "/opt/llmhost/venvs/33123d71b178752c/bin/python"
    # The default launcher: the venv's vllm script, whose python is beside it.
    script = "{ path=/opt/llmhost/venvs/0123/bin/vllm ; argv[]=/opt/llmhost/venvs/0123/bin/vllm }"
    assert cases.exec_python(script) == "/opt/llmhost/venvs/0123/bin/python"
    assert cases.exec_python("") is None


@pytest.mark.parametrize(
    "text", ["VLLM_API_KEY=abc123\n", "# managed\nVLLM_API_KEY='abc123'\n", "abc123\n"]
)
def test_the_driver_reads_a_key_as_the_agent_does(tmp_path: Path, text: str) -> None:
    path = tmp_path / "key"
    path.write_text(text)
    assert driver.read_key(str(path)) == agent._read_key(str(path)) == "abc123"


def test_the_driver_reads_kv_usage_and_preemptions_from_metrics() -> None:
    text = (
        "# HELP vllm:kv_cache_usage_perc KV-cache usage.\n"
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.125\n'
        'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5\n'
        'vllm:num_preemptions_total{engine="0",model_name="m"} 3.0\n'
        'vllm:num_preemptions_total{engine="1",model_name="m"} 1.0\n'
    )
    assert driver.metrics(text) == {driver.KV_USAGE: 0.5, driver.PREEMPTIONS: 4.0}


def _turns(turn: Any, clock: list[float], busy_s: list[float]) -> None:
    """Takes a turn after each busy time (the client's request), the fake clock moving on."""
    for busy in busy_s:
        clock[0] += busy
        step = turn()
        with pytest.raises(StopIteration):
            step.send(None)  # the patched sleep never suspends


def test_requests_arrive_at_the_workloads_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, slept = [100.0], []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(driver.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(driver.asyncio, "sleep", sleep)
    driver.random.seed(7)
    gaps = [driver.random.expovariate(2.0) for _ in range(400)]
    driver.random.seed(7)
    _turns(driver._arrivals(2.0), clock, [0.0] * 401)
    # The first at once, then each a draw after the one before.
    assert slept == pytest.approx([0.0, *gaps])
    # 400 gaps at 2 a second: about 200 s (the draws are Poisson's).
    assert 180 < clock[0] - 100 < 220
    # A client busy past its turn goes at once, and the next turn is a gap after that, not
    # a burst to catch up.
    slept.clear()
    driver.random.seed(7)
    _turns(driver._arrivals(2.0), clock, [0.0, 30.0, 0.0])
    assert slept == pytest.approx([0.0, 0.0, gaps[1]])
    # No rate: no wait at all.
    slept.clear()
    _turns(driver._arrivals(None), clock, [0.0, 0.0])
    assert slept == []


# --- numbers --------------------------------------------------------------------------------


def test_a_request_meets_its_targets_on_ttft_and_its_mean_gap() -> None:
    slo = Slo(ttft_ms=500, itl_ms=20)
    assert meets(_record(0.4, [10, 30]), slo)  # mean gap 20 ms
    assert not meets(_record(0.6, [10]), slo)
    assert not meets(_record(0.1, [25, 25]), slo)
    assert not meets(_record(0.1, [], ok=False), slo)
    assert meets(_record(0.1, []), slo)  # one token: no gap to hold


def test_metrics_from_sample_records() -> None:
    records = [_record(0.1 * i, [10.0, 20.0]) for i in range(1, 11)]
    records.append(_record(0.0, [], ok=False, error="Too Many Requests"))
    m = metrics(_raw(records, restarts=("1", "2")), Slo(ttft_ms=500, itl_ms=100))
    assert (m.requests, m.completed, m.failures) == (11, 10, 1)
    assert m.ttft_ms == Spread(500.0, 1000.0)
    assert m.itl_ms == Spread(10.0, 20.0)
    assert m.tpot_ms == Spread(15.0, 15.0)
    assert m.e2el_ms == Spread(530.0, 1030.0)
    assert m.output_tokens_per_s == 3.0  # 10 requests x 3 tokens in 10 s
    assert m.requests_per_s == 1.0
    # TTFT 0.1 .. 0.5 s meet the 500 ms target: 5 of 11 requests.
    assert (m.goodput_rps, m.slo_met) == (0.5, round(5 / 11, 3))
    assert (m.restarts, m.errors) == (1, ["Too Many Requests"])


def test_no_answer_gives_no_percentiles() -> None:
    m = metrics(_raw([_record(0, [], ok=False, error="refused")]), Slo())
    assert (m.ttft_ms, m.itl_ms, m.e2el_ms, m.goodput_rps) == (None, None, None, 0.0)


def _report() -> Report:
    spec = cases.driver_spec(lab(), ["coder", "general"], 10.0, "lab")
    fast, slow = _raw([_record(0.2, [10.0])]), _raw([_record(0.3, [12.0])])
    answer = {
        "cases": [
            {**case, "services": {name: fast if case["via"] == "direct" else slow
                                  for name in case["services"]}}
            for case in spec["cases"]
        ]
    }  # fmt: skip
    slo = {name: lab().service(name).slo for name in ("coder", "general")}
    return Report.of("lab-x", spec, answer, slo, ["note: sample"])


def test_the_json_holds_each_service_alone_and_co_loaded_direct_and_through_the_gateway() -> None:
    doc = json.loads(json.dumps(_report().to_dict()))
    assert (doc["host"], doc["duration_s"]) == ("lab-x", 10.0)
    for name in ("coder", "general"):
        service = doc["services"][name]
        for load in ("alone", "co-loaded"):
            for via in ("direct", "gateway"):
                m = service[load][via]
                for key in ("ttft_ms", "itl_ms", "tpot_ms", "e2el_ms"):
                    assert set(m[key]) == {"p50", "p99"}
                for key in ("output_tokens_per_s", "goodput_rps", "failures", "restarts"):
                    assert isinstance(m[key], int | float)
            assert service["gateway_added_ms"][load] == {"ttft_p50": 100.0, "e2el_p50": 102.0}
    assert doc["services"]["coder"]["slo"] == {"ttft_ms": 1500, "itl_ms": 50}
    assert doc["services"]["general"]["workload"] == {
        "prompt_tokens": 128, "output_tokens": 64, "concurrency": 4, "request_rate": None,
    }  # fmt: skip


def test_the_table_has_a_row_per_case_and_service_and_names_every_failure() -> None:
    report = _report()
    report.found["coder"]["alone"]["direct"].failures = 2
    report.found["coder"]["alone"]["direct"].errors = ["Too Many Requests"]
    report.found["general"]["co-loaded"]["gateway"].journal = ["oom-kill: vllm"]
    text = show.table(report)
    lines = text.splitlines()
    assert lines[1].split()[:3] == ["service", "load", "via"]
    assert [line.split()[:3] for line in lines[2:10]] == [
        [name, load, via]
        for name in ("coder", "general")
        for load in ("alone", "co-loaded")
        for via in ("direct", "gateway")
    ]
    assert lines[3].split()[3:5] == ["1/1", "300/300"]  # coder alone gateway: ok/sent, TTFT
    assert "coder: targets TTFT <= 1500 ms, TPOT <= 50 ms; load 4 at once, 512 tokens in" in text
    assert "general: the gateway adds (co-loaded): ttft_p50 +100.0 ms, e2el_p50 +102.0 ms" in text
    assert "!! coder alone direct: 2 failed: Too Many Requests" in text
    assert "!! general co-loaded gateway: journal: oom-kill: vllm" in text
    assert text.endswith("note: sample")


def test_the_plot_is_written(tmp_path: Path) -> None:
    out = tmp_path / "bench.png"
    show.plot(_report(), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- settings and the command ---------------------------------------------------------------


def test_a_workload_longer_than_the_model_is_refused_with_the_key() -> None:
    overrides = {"general": {"workload": {"prompt_tokens": 32768}}}
    with pytest.raises(SettingsError) as error:
        Settings.from_host_data({"llmhost_service_overrides": overrides}, "gpu-01")
    assert str(error.value).startswith("gpu-01: llmhost_services['general']")
    assert "prompt_tokens + output_tokens (32768 + 256) exceed max_model_len 32768" in str(
        error.value
    )


def test_an_override_changes_one_target_and_keeps_the_rest() -> None:
    overrides = {"coder": {"slo": {"ttft_ms": 800}}}
    settings = Settings.from_host_data({"llmhost_service_overrides": overrides}, "gpu-01")
    assert settings.service("coder").slo == Slo(ttft_ms=800, itl_ms=50)


def test_a_typo_in_a_target_names_the_targets_keys() -> None:
    overrides = {"coder": {"slo": {"ttft": 800}}}
    with pytest.raises(SettingsError) as error:
        Settings.from_host_data({"llmhost_service_overrides": overrides}, "gpu-01")
    assert "llmhost_services['coder'].slo.ttft: unknown key (did you mean ttft_ms?)" in str(
        error.value
    )


@pytest.mark.parametrize("duration", ["0", "soon", "7200"])
def test_a_bad_duration_is_refused(duration: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--duration", duration])
    assert exit_.value.code == Exit.USAGE
    assert "give the seconds per case as a number from 1 to 3600" in capsys.readouterr().err


def test_an_unknown_service_is_refused_before_any_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "inv.py"
    inventory.write_text('hosts = ["gpu-01"]\n')
    args = ["bench", str(inventory), "--service", "coderr", "--project-dir", str(tmp_path)]
    assert cli.main(args) == Exit.USAGE
    err = capsys.readouterr().err
    assert "--service coderr: gpu-01 has no such service (it has ['coder', 'general'])" in err


def test_bench_loads_one_host_at_a_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory = tmp_path / "inv.py"
    inventory.write_text('hosts = ["gpu-01", "gpu-02"]\n')
    assert cli.main(["bench", str(inventory), "--project-dir", str(tmp_path)]) == Exit.USAGE
    assert "bench loads one host at a time: pick it with --limit" in capsys.readouterr().err
