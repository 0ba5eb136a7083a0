#!/usr/bin/env bash
# Third device call, with the two vLLM servers of ../shared/gpu's dev_run.sh still up: the GPU
# post-deploy checks (tests/host -m gpu) against their processes, with the plan.json that
# plan.py wrote before they started. Usage (device, repo root): bash bench/gpu_vllm/checks.sh
set -u
export LLMHOST_DRILL_CONFIG=/tmp/llmhost-vllm
pids=""
for name in coder general; do
    # The API server and its engine (the process holding the GPU memory), by their command lines.
    for pid in $(pgrep -f "m/$name --serve[d]"); do
        pids="$pids,$name=$pid"
        for child in $(pgrep -P "$pid"); do pids="$pids,$name=$child"; done
    done
done
echo "service PIDs: ${pids#,}"
nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader
python3 -m pytest tests/host -m gpu -p no:cacheprovider -v -rA --no-header \
    --inventory bench/gpu_vllm/inventory.py --service-pids "${pids#,}"
