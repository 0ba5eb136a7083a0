#!/usr/bin/env bash
# Issue 5, part 3, on a GPU machine without vLLM or systemd (the device machine):
#   1. capture nvidia-smi's CSV (idle, busy, planted) for the GPU facts' test fixtures;
#   2. two processes hold GPU memory as the plan's two services would (0.55 and 0.30 of the GPU,
#      started one at a time like vLLM instances) and the GPU checks run against them: pass;
#   3. one of them grows past its plan, the checks run again: the right ones fail.
# Usage (repo root, llmhost's deps importable): OUT=/some/dir bash bench/gpu_drill/run.sh
set -u
OUT=${OUT:-/tmp/gpu-drill}
SMI="$OUT/smi"
mkdir -p "$SMI"
export LLMHOST_DRILL_CONFIG
LLMHOST_DRILL_CONFIG=$(mktemp -d)
CODER_FRACTION=0.55
GENERAL_FRACTION=0.30

GPU_Q=(nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.free,compute_cap,driver_version --format=csv,noheader,nounits)
APP_Q=(nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory,process_name --format=csv,noheader,nounits)
capture() {
    "${GPU_Q[@]}" >"$SMI/gpus_$1.csv" 2>&1
    "${APP_Q[@]}" >"$SMI/apps_$1.csv" 2>&1
}

wait_ready() {  # file, seconds
    for _ in $(seq "$2"); do [ -s "$1" ] && return 0; sleep 1; done
    echo "timed out waiting for $1" >&2
    return 1
}

checks() {  # label
    echo "=== $1: pytest tests/host -m gpu (local backend, --service-pids coder=$CODER,general=$GENERAL)"
    python3 -m pytest tests/host -m gpu -p no:cacheprovider -v -rA --no-header \
        --inventory bench/gpu_drill/inventory.py --service-pids "coder=$CODER,general=$GENERAL"
    echo "=== $1: pytest exit status $?"
}

nvidia-smi >"$SMI/nvidia-smi.txt" 2>&1
capture idle

# The applied plan written with the deploy's codec (one source of truth for the checks).
total_mib=$("${GPU_Q[@]}" | head -1 | cut -d, -f4 | tr -d ' ')
python3 bench/gpu_drill/plan.py "$LLMHOST_DRILL_CONFIG" $((total_mib * 1048576)) \
    $CODER_FRACTION $GENERAL_FRACTION || exit 1

# One at a time, as vLLM instances must start (FACTS.md).
python3 bench/gpu_drill/hold_gpu.py --fraction $CODER_FRACTION --ready-file /tmp/coder.ready &
CODER=$!
wait_ready /tmp/coder.ready 120 || exit 1
python3 bench/gpu_drill/hold_gpu.py --fraction $GENERAL_FRACTION --ready-file /tmp/general.ready &
GENERAL=$!
wait_ready /tmp/general.ready 120 || exit 1
capture busy
# A non-root view: where nvidia-smi withholds values it prints [Insufficient Permissions].
su nobody -s /bin/sh -c "${APP_Q[*]}" >"$SMI/apps_busy_nobody.csv" 2>&1

start=$(date +%s%N)
checks "plan kept" 2>&1 | tee "$OUT/pass.txt"
echo "suite wall time: $((($(date +%s%N) - start) / 1000000)) ms" | tee -a "$OUT/pass.txt"

rm -f /tmp/coder.ready
kill -USR1 "$CODER"
wait_ready /tmp/coder.ready 60 || exit 1
capture planted
checks "planted: coder grew 4 GiB past its plan" 2>&1 | tee "$OUT/fail.txt"

kill "$CODER" "$GENERAL"
wait
tar -czf "$OUT/smi.tgz" -C "$OUT" smi && rm -r "$SMI"
