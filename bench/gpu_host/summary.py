"""summary.json from the files scenario.sh leaves in its run directory (partial runs too).

    python3 summary.py RUN_DIR > summary.json

Reads pyinfra's output (each operation's ``Success`` / ``No changes``, the deploy's phase
times), pytest's last line, the services' journals (vLLM's own KV cache and start lines, with
unix timestamps), the applied plan, nvidia-smi per process, and the drills' notes.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path
from typing import Any

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SERVICES = ("coder", "general")
GIB = 2**30


def text(run: Path, name: str) -> str:
    p = run / name
    return ANSI.sub("", p.read_text(errors="replace")) if p.is_file() else ""


def num(pattern: str, s: str, group: int = 1) -> float | None:
    m = re.search(pattern, s)
    return float(m.group(group)) if m else None


def deploy(run: Path, name: str) -> dict[str, Any] | None:
    log = text(run, f"{name}.log")
    if not log:
        return None
    changed, op = [], ""
    for line in log.splitlines():
        if m := re.search(r"--> Starting operation: (.*)", line):
            op = m.group(1).strip()
        elif re.search(r"\] Success\b", line):
            changed.append(op)
    phases = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"\] ([A-Z][^\[\]\n]*?): (\d+\.\d) s$", log, re.M)
        if "phases done" not in m.group(1)
    }
    rc = text(run, f"{name}.rc").strip()
    return {
        "rc": int(rc) if rc.lstrip("-").isdigit() else None,
        "total_s": num(r"llmhost phases done in ([\d.]+) s", log),
        "phases_s": phases,
        "changed": len(changed),
        "changed_ops": changed,
    }


def journal_times(s: str, unit: str) -> dict[str, float | None]:
    """The unit's last start (systemd's Starting/Started line) before vLLM's first 'startup
    complete' after it: earlier failed starts in the same boot do not count."""
    start = None
    for line in s.splitlines():
        parts = line.split(" ", 1)
        try:
            t = float(parts[0])
        except ValueError:
            continue
        if re.search(rf"(Starting|Started) {unit}", line):
            start = start if start and "Started" in line else t
        elif "Main process exited" in line:
            start = None
        if start is not None and "Application startup complete" in line:
            return {"start": start, "ready": t}
    return {"start": start, "ready": None}


def planned_kv(deploy_log: str) -> dict[str, tuple[float, int]]:
    """KV GiB and tokens per service from the plan table the deploy's own preflight printed
    (the card's total as the host reported it: the plan that was deployed)."""
    out: dict[str, tuple[float, int]] = {}
    for line in deploy_log.splitlines():
        f = line.split()
        if len(f) >= 6 and f[0] in SERVICES and f[0] not in out:
            try:
                out[f[0]] = (float(f[4]), int(f[5].replace(",", "")))
            except ValueError:
                continue
    return out


def kv_from_log(s: str) -> dict[str, float | None]:
    gib = re.findall(r"Available KV cache memory: ([\d.]+) GiB", s)
    tokens = re.findall(r"GPU KV cache size: ([\d,]+) tokens", s)
    return {
        "vllm_gib": float(gib[-1]) if gib else None,
        "vllm_tokens": int(tokens[-1].replace(",", "")) if tokens else None,
    }


def main() -> int:
    run = Path(sys.argv[1])
    out: dict[str, Any] = {}
    out["gpu"] = text(run, "gpu.txt").strip()
    j1 = {s: text(run, f"journal-deploy1-{s}.txt") for s in SERVICES}
    m = re.search(r"api_utils.py:\d+\].*version (\d+\.\d+\.\d+)", j1["coder"] + j1["general"])
    out["vllm"] = m.group(1) if m else None
    d1 = deploy(run, "deploy1")
    d1b = deploy(run, "deploy1b")
    out["deploy_rc"] = d1["rc"] if d1 else None
    out["deploy"] = d1
    if d1b:
        out["deploy_phases_off"] = {"why": "see apt-try.log", **d1b}
        out["deploy_rc"] = d1b["rc"]
    d2 = deploy(run, "deploy2")
    out["noop_changed"] = d2["changed"] if d2 else None
    out["noop"] = d2
    py = text(run, "pytest.log").strip().splitlines()
    last = py[-1] if py else ""
    out["host_checks"] = {
        k: int(num(rf"(\d+) {k}", last) or 0) for k in ("passed", "failed", "skipped")
    } | {"errors": int(num(r"(\d+) error", last) or 0), "line": last}
    plan: dict[str, Any] = {}
    with contextlib.suppress(json.JSONDecodeError):
        plan = json.loads(text(run, "applied-plan.json"))
    try:
        planned = json.loads(text(run, "plan.json"))["hosts"]["gpu-guest"]["services"]
    except (json.JSONDecodeError, KeyError):
        planned = {}
    out["kv"], out["nvml_mib"] = {}, {}
    gpu_total = ((plan.get("gpus") or [{}])[0].get("total_bytes") or 0) / 2**20 or num(
        r",\s*(\d+),", text(run, "gpu-deploy1.txt")
    )
    deployed = planned_kv(text(run, "deploy1b.log") or text(run, "deploy1.log"))
    nvml = text(run, "nvml-deploy1.txt")
    for s in SERVICES:
        p = planned.get(s, {})
        gib, tokens = deployed.get(s, (p.get("kv_gib"), p.get("kv_tokens")))
        kv = kv_from_log(j1[s]) | {"plan_gib": gib, "plan_tokens": tokens}
        if kv["vllm_gib"] and kv["plan_gib"]:
            kv["diff_pct"] = round(100 * (kv["plan_gib"] - kv["vllm_gib"]) / kv["vllm_gib"], 2)
        out["kv"][s] = kv
        used = sum(
            int(line.split()[1]) for line in nvml.splitlines() if f"llmhost-{s}.service" in line
        )
        frac = plan.get("services", {}).get(s, {}).get("gpu_memory_utilization") or p.get(
            "gpu_memory_utilization"
        )
        plan_mib = None
        if frac and gpu_total:
            # The fraction of the card, plus what vLLM keeps outside it (context, graphs).
            outside = p.get("outside_fraction", {}).get("cuda_context_gib", 0) + (
                0
                if p.get("overhead", {}).get("cuda_graphs_inside_fraction", True)
                else p.get("overhead", {}).get("cuda_graphs_gib", 0)
            )
            plan_mib = round(frac * gpu_total + outside * 1024)
        out["nvml_mib"][s] = {"plan": plan_mib, "used": used or None}
    out["applied_plan_services"] = list(plan.get("services", {})) if plan else None
    kill = text(run, "kill.txt")
    out["kill"] = {
        "healthy_s": num(r"healthy_s ([\d.]+)", kill),
        "general_untouched": _untouched(kill),
        "notes": kill.strip().splitlines(),
    }
    reboot = text(run, "reboot.txt")
    jr = {s: text(run, f"journal-reboot-{s}.txt") for s in SERVICES}
    tr = {s: journal_times(jr[s], f"llmhost-{s}") for s in SERVICES}
    coder_ready, general_start = tr["coder"]["ready"], tr["general"]["start"]
    out["reboot"] = {
        "healthy_s": _max(
            num(r"coder_healthy_s ([\d.]+)", reboot), num(r"general_healthy_s ([\d.]+)", reboot)
        ),
        "coder_healthy_s": num(r"coder_healthy_s ([\d.]+)", reboot),
        "general_healthy_s": num(r"general_healthy_s ([\d.]+)", reboot),
        "ordered": (general_start > coder_ready) if coder_ready and general_start else None,
        "general_start_minus_coder_ready_s": (
            round(general_start - coder_ready, 3) if coder_ready and general_start else None
        ),
        "kv_after_reboot": {s: kv_from_log(jr[s])["vllm_gib"] for s in SERVICES},
    }
    rb = text(run, "rollback.txt")
    out["rollback"] = {
        "healthy_s": num(r"healthy_s ([\d.]+)", rb),
        "deploy_rc": num(r"deploy rc (\d+)", rb),
        "general_untouched": _untouched(rb),
        "notes": rb.strip().splitlines(),
    }
    out["start_s"] = {}
    for s in SERVICES:
        cold = journal_times(j1[s], f"llmhost-{s}")
        warm = tr[s]
        out["start_s"][s] = {
            "cold": _diff(cold),
            "warm": _diff(warm),
        }
    print(json.dumps(out, indent=2))
    return 0


def _diff(t: dict[str, float | None]) -> float | None:
    start, ready = t["start"], t["ready"]
    return round(ready - start, 1) if start and ready else None


def _max(a: float | None, b: float | None) -> float | None:
    return max(a, b) if a is not None and b is not None else None


def _untouched(notes: str) -> bool | None:
    before = re.search(r"general before: (\d+) (\d+)", notes)
    after = re.search(r"general after: (\d+) (\d+)", notes)
    return before.groups() == after.groups() if before and after else None


if __name__ == "__main__":
    sys.exit(main())
