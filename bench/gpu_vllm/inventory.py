# Real vLLM on the device (bench/gpu_vllm): the post-deploy checks through testinfra's local
# backend against the two vLLM servers bench/gpu_vllm/run.sh started; plan.json (written by
# bench/gpu_vllm/plan.py with the deploy's codec) is in LLMHOST_DRILL_CONFIG.
import os

hosts = [
    (
        "@local",
        {
            "llmhost_stack": "single-vendor",
            "llmhost_vllm_version": "0.25.0",
            "llmhost_config_dir": os.environ["LLMHOST_DRILL_CONFIG"],
        },
    ),
]
