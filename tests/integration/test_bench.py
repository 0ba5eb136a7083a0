"""``llmhost bench`` on the converged lab guest: real load from vLLM's own benchmark client, each
service alone and both at once, direct and through the gateway; every number present, nothing
restarted, no key in the output. (Two seconds a case: the numbers people read are the README's.)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from lab_guest import BIN, HOST, LAYOUT, ROOT, SERVICES, DeployRun, on_guest, unit

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
