"""Write the applied plan for the drill's two GPU holders with the deploy's own codec.

Usage: python3 bench/gpu_drill/plan.py CONFIG_DIR GPU_TOTAL_BYTES CODER_FRACTION GENERAL_FRACTION
"""

from __future__ import annotations

import sys
from pathlib import Path

from llmhost.applied_plan import AppliedGpu, AppliedPlan, AppliedService
from llmhost.layout import unit_name


def main(config_dir: str, total: str, *fractions: str) -> None:
    services = {
        name: AppliedService(
            name=name,
            unit=unit_name(name),
            port=port,
            bind_host="127.0.0.1",
            served_model_name=name,
            max_model_len=16384,
            gpu_memory_utilization=float(fraction),
            cpu_kv_cache_gib=None,
            kv_tokens=0,
            gpus=[0],
        )
        for (name, port), fraction in zip(
            (("coder", 8001), ("general", 8002)), fractions, strict=True
        )
    }
    gpus = [AppliedGpu(index=0, total_bytes=int(total))]
    plan = AppliedPlan(gpu=True, gpus=gpus, gpu_memory_cap=0.90, services=services)
    (Path(config_dir) / "plan.json").write_text(plan.to_json())


if __name__ == "__main__":
    main(*sys.argv[1:])
