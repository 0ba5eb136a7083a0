"""``llmhost bench``'s load, run ON the host by the running release's python: every case in one
process (importing vLLM costs ~9 CPU-seconds), each service's requests sent and timed by vLLM's
own benchmark client (``vllm.benchmarks``: its random prompts and its streaming chat request,
which records TTFT and every inter-token gap), the host's side read around each case.

Sent as ``python -c SOURCE`` (``llmhost.remote.run``) with one JSON argument that holds paths,
never secrets: the keys are read here from their 0600 files and go only into request headers.
Standard library, vLLM and what vLLM itself imports (aiohttp); Python >= 3.10. vLLM logs to
stdout: all but the one JSON answer goes to stderr, progress lines prefixed ``llmhost-bench:``.
The prompts are sampled once and cycled through: a run long enough to reuse one is told so by
its prompt count (``prompts_per_service``), which the controller sizes from the duration.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

PROGRESS = "llmhost-bench:"
# In the progress line that starts each case's load.
CASE = " case "
# How often /metrics is read during a case, for the KV cache peak.
SAMPLE_S = 0.5
METRIC_RE = re.compile(r"^(vllm:[a-z_]+)(?:\{[^}]*\})? ([0-9.eE+-]+|NaN)$", re.M)
KV_USAGE = "vllm:kv_cache_usage_perc"
PREEMPTIONS = "vllm:num_preemptions_total"


def read_key(path: str) -> str:
    """The key in a deploy's ``VLLM_API_KEY=...`` env file, or a file of the bare key (as the
    agent reads it; a unit test holds the two equal)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == "VLLM_API_KEY":
            return value.strip().strip("'\"")
    return text.strip()


def metrics(text: str) -> dict[str, float]:
    """The KV cache usage (max over label sets) and preemptions (sum) of a /metrics page."""
    found = {KV_USAGE: 0.0, PREEMPTIONS: 0.0}
    for name, value in METRIC_RE.findall(text):
        if name == KV_USAGE and value != "NaN":
            found[name] = max(found[name], float(value))
        elif name == PREEMPTIONS:
            found[name] += float(value)
    return found


def systemd(unit: str, prop: str) -> str:
    args = ["systemctl", "show", "-p", prop, "--value", unit]
    return subprocess.run(args, capture_output=True, text=True).stdout.strip()


def journal(unit: str, since: float, pattern: str) -> list[str]:
    """The unit's journal lines since ``since`` (epoch seconds) that match ``pattern``."""
    args = ["journalctl", "-u", unit, "--since", f"@{since:.0f}", "-o", "cat", "--no-pager"]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if re.search(pattern, line, re.I)][:5]


def prompts(services: dict[str, Any], count: int) -> dict[str, Any]:
    """``count`` random prompts of each service's length, from its own tokenizer: every request
    of the run gets a new one, so vLLM's prefix cache does not shorten its prefill."""
    from vllm.benchmarks.datasets import RandomDataset
    from vllm.tokenizers import get_tokenizer

    found = {}
    for seed, (name, svc) in enumerate(sorted(services.items())):
        tokenizer = get_tokenizer(svc["tokenizer"])
        samples = RandomDataset(random_seed=seed).sample(
            tokenizer, count, input_len=svc["prompt_tokens"], output_len=svc["output_tokens"],
            range_ratio=0.0,
        )  # fmt: skip
        found[name] = itertools.cycle(samples)
    return found


async def _page(session: Any, url: str) -> dict[str, float]:
    async with session.get(url) as response:
        return metrics(await response.text())


async def _watch(session: Any, url: str, stop: asyncio.Event) -> float:
    """The KV cache usage peak until ``stop``."""
    peak = 0.0
    while not stop.is_set():
        peak = max(peak, (await _page(session, url))[KV_USAGE])
        await asyncio.sleep(SAMPLE_S)
    return peak


def _target(svc: dict[str, Any], via: str) -> tuple[dict[str, str], Any]:
    """The request headers and TLS context of a service's target (direct or the gateway)."""
    target = svc["targets"][via]
    headers = {"Authorization": f"Bearer {read_key(target['key_file'])}"}
    tls = ssl.create_default_context(cafile=target.get("cafile")) if via == "gateway" else None
    return headers, tls


def _arrivals(per_s: float | None) -> Callable[[], Any]:
    """Waits for the next request's turn: Poisson arrivals at ``per_s`` a second, as vLLM's
    bench draws them; with no rate, at once. A turn that came while every client was busy goes
    as soon as one is free, and the next follows it by a draw (no burst to catch up)."""
    due = time.monotonic()

    async def turn() -> None:
        nonlocal due
        if per_s is None:
            return
        mine = max(due, time.monotonic())
        due = mine + random.expovariate(per_s)
        await asyncio.sleep(mine - time.monotonic())

    return turn


async def _load(svc: dict[str, Any], via: str, pool: Any, over: Callable[[], bool]) -> list[Any]:
    """``concurrency`` clients, each sending its next request until ``over()``, when its turn
    comes at the workload's request rate."""
    import aiohttp
    from vllm.benchmarks.lib.endpoint_request_func import (
        ASYNC_REQUEST_FUNCS,
        RequestFuncInput,
    )

    send = ASYNC_REQUEST_FUNCS["openai-chat"]
    headers, tls = _target(svc, via)
    target = svc["targets"][via]
    done: list[Any] = []
    turn = _arrivals(svc["request_rate"])

    async def client(session: Any) -> None:
        while not over():
            await turn()
            if over():
                break
            sample = next(pool)
            request = RequestFuncInput(
                prompt=sample.prompt, api_url=target["url"], prompt_len=sample.prompt_len,
                output_len=svc["output_tokens"], model=svc["model"], extra_headers=headers,
                ignore_eos=True,
            )  # fmt: skip
            done.append(await send(request_func_input=request, session=session))

    # Never through a proxy the environment names: the targets are this host's.
    connector = aiohttp.TCPConnector(limit=0, ssl=tls if tls else False)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        await asyncio.gather(*(client(session) for _ in range(target["concurrency"])))
    return done


def _record(out: Any) -> list[Any]:
    """One request as [ok, ttft_s, e2el_s, output tokens, inter-token gaps in ms, error]."""
    itl = [round(gap * 1000, 2) for gap in out.itl]
    error = out.error.strip().splitlines()[-1][:200] if out.error else ""
    return [out.success, out.ttft, out.latency, out.output_tokens, itl, error]


def _after(seconds: float) -> Callable[[], bool]:
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline


def _until_stdin_closes() -> Callable[[], bool]:
    """A load held for as long as the controller needs it (``llmhost bench --sweep`` while it
    restarts the other service): over when our stdin, the SSH channel's, is closed."""
    closed = threading.Event()

    def read() -> None:
        sys.stdin.read()
        closed.set()

    threading.Thread(target=read, daemon=True).start()
    return closed.is_set


async def _case(spec: dict[str, Any], case: dict[str, Any], pool: dict[str, Any]) -> Any:
    import aiohttp

    services = {name: spec["services"][name] for name in case["services"]}
    units = {name: svc["unit"] for name, svc in services.items()}
    restarts = {name: systemd(unit, "NRestarts") for name, unit in units.items()}
    since, stop = time.time(), asyncio.Event()
    async with aiohttp.ClientSession(trust_env=False) as session:
        before = {n: await _page(session, s["metrics_url"]) for n, s in services.items()}
        watch = {n: asyncio.create_task(_watch(session, s["metrics_url"], stop)) for n, s in
                 services.items()}  # fmt: skip
        start = time.monotonic()
        over = _until_stdin_closes() if case.get("until_stdin") else _after(spec["duration_s"])
        runs = [_load(svc, case["via"], pool[name], over) for name, svc in services.items()]
        outputs = await asyncio.gather(*runs)
        elapsed = time.monotonic() - start
        stop.set()
        after = {n: await _page(session, s["metrics_url"]) for n, s in services.items()}
        peaks = {n: await task for n, task in watch.items()}
    return {
        name: {
            "elapsed_s": elapsed,
            "requests": [_record(out) for out in outs],
            "restarts": [restarts[name], systemd(units[name], "NRestarts")],
            "kv_cache_peak": max(peaks[name], after[name][KV_USAGE]),
            "preemptions": after[name][PREEMPTIONS] - before[name][PREEMPTIONS],
            "journal": journal(units[name], since, spec["journal_pattern"]),
        }
        for name, outs in zip(services, outputs, strict=True)
    }


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Every case of ``spec`` in turn; one answer with each case's raw records."""
    pool = prompts(spec["services"], spec["prompts_per_service"])
    found = []
    for i, case in enumerate(spec["cases"], 1):
        print(f"{PROGRESS}{CASE}{i}/{len(spec['cases'])}: {case['name']}", file=sys.stderr)
        found.append({**case, "services": asyncio.run(_case(spec, case, pool))})
    return {"cases": found}


def main(argv: list[str]) -> None:
    # vLLM's loggers and warnings write to stdout: keep it for the answer alone.
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    print(f"{PROGRESS} importing vLLM", file=sys.stderr)
    json.dump(run(json.loads(argv[0])), answer)
    answer.close()


if __name__ == "__main__":
    main(sys.argv[1:])
