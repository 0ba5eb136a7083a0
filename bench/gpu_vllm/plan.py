"""The single-vendor stack planned for this GPU and vLLM 0.25.0 (the version carried to the
device): prints each service's fraction for the vLLM starts, writes the applied plan.json with
the deploy's own codec (``AppliedPlan``) for the post-deploy GPU checks.

Usage (device, repo root, llmhost importable): python3 bench/gpu_vllm/plan.py CONFIG_DIR
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from llmhost.applied_plan import AppliedPlan
from llmhost.facts.nvidia import NvidiaGpus, reserved_bytes
from llmhost.layout import Layout
from llmhost.plan.catalogue import resolve
from llmhost.plan.planner import plan_services
from llmhost.settings import Settings

# vllm==0.25.0 pins the device's torch (FACTS.md); the planner models its accounting too.
VLLM_VERSION = "0.25.0"


def main(config_dir: str) -> None:
    fact = NvidiaGpus()
    smi = subprocess.run(fact.command(), shell=True, capture_output=True, text=True, check=True)
    gpu = fact.process(smi.stdout.splitlines())[0]
    total, reserved = gpu["memory_total_bytes"], reserved_bytes(gpu)
    assert total is not None and reserved is not None
    settings = Settings.from_host_data(
        {
            "llmhost_stack": "single-vendor",
            "llmhost_vllm_version": VLLM_VERSION,
            "llmhost_config_dir": config_dir,
        }
    )
    metas = {svc.name: resolve(svc.model) for svc in settings.services}
    plan = plan_services(settings, total, metas, gpu_reserved_bytes=reserved)
    print(plan.render_table())
    Path(Layout(settings).plan).write_text(AppliedPlan.of(settings, plan, total).to_json())
    for name, svc in plan.services.items():
        print(f"PLAN {name} {svc.gpu_memory_utilization} {svc.kv_tokens} {svc.kv_bytes}")


if __name__ == "__main__":
    main(sys.argv[1])
