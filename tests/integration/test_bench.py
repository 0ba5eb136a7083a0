"""``llmhost bench`` on the converged lab guest: real load from vLLM's own benchmark client, each
service alone and both at once, direct and through the gateway; every number present, nothing
restarted, no key in the output. Then a sweep of one service's ``max_num_seqs``: only its unit
restarts (two vLLM starts), the other answers all through, the deployed settings end in place;
it is also the suite's drill of a change to one service restarting only that service.
(Two seconds a case: the numbers people read are the README's.)
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from lab_guest import BIN, HOST, LAYOUT, ROOT, SERVICES, DeployRun, kept_data, on_guest, unit

from llmhost.bench.cases import ALONE, CO_LOADED, DIRECT, GATEWAY

LATENCIES = ("ttft_ms", "itl_ms", "tpot_ms", "e2el_ms")


def _main_pids() -> str:
    return on_guest(f"systemctl show -p MainPID --value {' '.join(map(unit, SERVICES))}")


def test_bench_loads_each_service_alone_and_co_loaded(
    start_converged: DeployRun, tmp_path: Path
) -> None:
    before = _main_pids()
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    result = subprocess.run(
        [BIN / "llmhost", "bench", "inventories/lab.py", "--limit", HOST, "--duration", "2",
         "--json", out, "--plot", png],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads(out.read_text())
    for name in SERVICES:
        svc = doc["services"][name]
        for load in (ALONE, CO_LOADED):
            for via in (DIRECT, GATEWAY):
                m = svc[load][via]
                assert m["completed"] > 0 and m["failures"] == 0 and m["restarts"] == 0, m
                for key in LATENCIES:
                    assert 0 <= m[key]["p50"] <= m[key]["p99"], (name, load, via, key, m)
                assert m["output_tokens_per_s"] > 0 and 0 <= m["slo_met"] <= 1, m
                assert m["journal"] == [], m
            assert svc["gateway_added_ms"][load]["ttft_p50"] is not None, svc
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _main_pids() == before, "the bench restarted a service"
    # The keys it sent (the services' and the gateway client's) are in no line it printed.
    api_key = on_guest(f"cat {LAYOUT.api_key_env}").strip().removeprefix("VLLM_API_KEY=")
    client_key = on_guest(f"cat {LAYOUT.gateway_key('lab')}").strip()
    printed = result.stdout + result.stderr
    assert api_key not in printed and client_key not in printed, "a key is in the bench's output"


def _flags(name: str) -> list[str]:
    exec_start = on_guest(f"systemctl show -p ExecStart --value {unit(name)}")
    return re.findall(r"--max-num-(?:seqs|batched-tokens) \d+", exec_start)


def test_sweep_restarts_only_its_service_and_puts_it_back(
    start_converged: DeployRun, tmp_path: Path
) -> None:
    swept, other = SERVICES[-1], SERVICES[0]
    deployed = LAYOUT.settings.service(swept).max_num_seqs
    tried = deployed // 2
    flags, pids = _flags(swept), _main_pids().split()
    out = tmp_path / "sweep.json"
    began = time.monotonic()
    # The other service's load at one request a second, through the switches too: on 2 cores
    # its closed-loop workload (even one client: ~1.6 cores busy) starved each start, and the
    # drill took 900 s and 1,740 CPU-s. Data the deploy carries, on top of which the sweep puts
    # its own (it changes nothing on the host: no restart).
    lighter = {other: {"workload": {"concurrency": 1, "request_rate": 1}}}
    result = subprocess.run(
        [BIN / "llmhost", "bench", "inventories/lab.py", "--limit", HOST, "--service", swept,
         "--duration", "2", "--sweep", f"max_num_seqs={deployed},{tried}", "--json", out,
         *kept_data(), "--data", f"llmhost_service_overrides={json.dumps(lighter)}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    print(result.stdout)
    print(f"the sweep took {time.monotonic() - began:.0f} s (wall)")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads(out.read_text())
    # The deployed value is tried last: the sweep ends on it, with no restart to put it back.
    assert [(c["max_num_seqs"], c["deployed"], c["switched"]) for c in doc["configs"]] == [
        (tried, False, True),
        (deployed, True, True),
    ], doc["configs"]
    for config in doc["configs"]:
        held = config["during_switch"][other]
        assert held["completed"] > 0 and held["failures"] == 0 and held["restarts"] == 0, held
        for name in SERVICES:
            m = config["measured"][name]
            assert m["completed"] > 0 and m["failures"] == 0, (config["max_num_seqs"], name, m)
    after = _main_pids().split()
    assert after[SERVICES.index(other)] == pids[SERVICES.index(other)], "the other restarted"
    assert after[SERVICES.index(swept)] != pids[SERVICES.index(swept)], "never switched"
    assert _flags(swept) == flags, "the deployed settings are not back"
    best = doc["best"]["max_num_seqs"]
    assert f"best by goodput: max_num_seqs={best} " in result.stdout
    if best != deployed:
        assert f'"{swept}": {{"max_num_seqs": {best}, ' in doc["override"], doc["override"]
        assert doc["override"] in result.stdout
