#!/usr/bin/env bash
# Issue 12 on a GPU machine without systemd or network (the device machine): the GPU exporter
# (llmhost/monitoring/gpu_exporter.py) against two torch processes holding GPU memory as the plan's two
# services would (bench/gpu_drill/hold_gpu.py, 0.55 and 0.30 of the GPU, one at a time).
#   1. its unit tests (no GPU needed);
#   2. the exporter in the foreground as root, PIDs mapped to services with --service-pid
#      (no systemd, so no cgroups to ask): its /metrics next to nvidia-smi's;
#   3. the same as an unprivileged user with no capabilities (what the unit's DynamicUser gets):
#      does NVML still give per-process memory?
#   4. the post-deploy check that the exporter's per-service memory agrees with nvidia-smi's.
# Usage (repo root; python3 with llmhost's deps, nvidia-ml-py, prometheus-client, torch, pytest):
#   OUT=/some/dir bash bench/gpu_exporter/run.sh
set -u
OUT=${OUT:-/tmp/gpu-exporter}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export LLMHOST_DRILL_CONFIG
LLMHOST_DRILL_CONFIG=$(mktemp -d)
PORT=9835          # llmhost_gpu_exporter_port's default: the host check reads it there
PORT_NOBODY=9836
CODER_FRACTION=0.55
GENERAL_FRACTION=0.30
APP_Q=(nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory,process_name --format=csv,noheader,nounits)
GPU_Q=(nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.free,utilization.gpu,temperature.gpu,power.draw --format=csv,noheader,nounits)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; }
trap cleanup EXIT

wait_ready() {  # file, seconds
    for _ in $(seq "$2"); do [ -s "$1" ] && return 0; sleep 1; done
    echo "timed out waiting for $1" >&2
    return 1
}
wait_http() {  # url, seconds
    for _ in $(seq "$2"); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 1; done
    echo "timed out waiting for $1" >&2
    return 1
}

echo "=== 1. unit tests of the exporter (NVML-shaped values, no GPU)"
python3 -m pytest tests/unit/test_gpu_exporter.py -q -p no:cacheprovider 2>&1 | tail -3

total_mib=$("${GPU_Q[@]}" | head -1 | cut -d, -f4 | tr -d ' ')
python3 bench/gpu_drill/plan.py "$LLMHOST_DRILL_CONFIG" $((total_mib * 1048576)) \
    $CODER_FRACTION $GENERAL_FRACTION || exit 1
rm -f /tmp/coder.ready /tmp/general.ready
python3 bench/gpu_drill/hold_gpu.py --fraction $CODER_FRACTION --ready-file /tmp/coder.ready &
CODER=$!; PIDS+=("$CODER")
wait_ready /tmp/coder.ready 120 || exit 1
python3 bench/gpu_drill/hold_gpu.py --fraction $GENERAL_FRACTION --ready-file /tmp/general.ready &
GENERAL=$!; PIDS+=("$GENERAL")
wait_ready /tmp/general.ready 120 || exit 1
MAP=(--service-pid "coder=$CODER" --service-pid "general=$GENERAL")

echo "=== 2. exporter as root on 127.0.0.1:$PORT (${MAP[*]})"
python3 llmhost/monitoring/gpu_exporter.py --port $PORT "${MAP[@]}" >"$OUT/exporter.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$PORT/metrics" 30 || { cat "$OUT/exporter.log"; exit 1; }
curl -fsS "http://127.0.0.1:$PORT/metrics" >"$OUT/metrics_root.txt"
echo "--- exporter /metrics (llmhost_gpu_*):"
grep '^llmhost_gpu_' "$OUT/metrics_root.txt"
echo "--- nvidia-smi --query-compute-apps (MiB):"
"${APP_Q[@]}"
echo "--- nvidia-smi --query-gpu (MiB, %, C, W):"
"${GPU_Q[@]}"
echo "--- per service, exporter vs nvidia-smi:"
python3 - "$OUT/metrics_root.txt" "$CODER" "$GENERAL" <<'PY'
import subprocess, sys
from prometheus_client.parser import text_string_to_metric_families
text = open(sys.argv[1]).read()
pids = {int(sys.argv[2]): "coder", int(sys.argv[3]): "general"}
exported = {}
for family in text_string_to_metric_families(text):
    for s in family.samples:
        if s.name == "llmhost_gpu_process_memory_used_bytes":
            exported[s.labels["service"]] = exported.get(s.labels["service"], 0) + s.value
smi = {}
out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                      "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout
for line in out.splitlines():
    parts = [v.strip() for v in line.split(",")]
    pid, mib = parts[0], parts[-1]
    if int(pid) in pids:
        smi[pids[int(pid)]] = int(mib) * 1024 * 1024
gib = lambda v: "none" if v is None else f"{v / 2**30:.2f} GiB"
for name in ("coder", "general"):
    e, n = exported.get(name), smi.get(name)
    diff = "n/a" if e is None or n is None else f"{(e - n) / 2**20:+.0f} MiB"
    print(f"{name}: exporter {gib(e)}, nvidia-smi {gib(n)}, diff {diff}")
PY

echo "=== 3. exporter as nobody, no capabilities, on 127.0.0.1:$PORT_NOBODY"
if command -v setpriv >/dev/null; then
    # A copy nobody can read wherever the checkout lives (it may be under /root).
    copy=$(mktemp -d) && chmod 755 "$copy" && cp llmhost/monitoring/gpu_exporter.py "$copy/" && chmod 644 "$copy/gpu_exporter.py"
    setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all \
        python3 "$copy/gpu_exporter.py" --port $PORT_NOBODY "${MAP[@]}" >"$OUT/exporter_nobody.log" 2>&1 &
    PIDS+=("$!")
    if wait_http "http://127.0.0.1:$PORT_NOBODY/metrics" 30; then
        curl -fsS "http://127.0.0.1:$PORT_NOBODY/metrics" >"$OUT/metrics_nobody.txt"
        grep -E '^llmhost_gpu_(process_memory|memory_used|nvml_up)' "$OUT/metrics_nobody.txt"
        echo "(per-process series as nobody: $(grep -c '^llmhost_gpu_process_memory_used_bytes{' "$OUT/metrics_nobody.txt"))"
    else
        cat "$OUT/exporter_nobody.log"
    fi
else
    echo "no setpriv here: skipped"
fi

echo "=== 4. post-deploy check: exporter per service vs nvidia-smi (local backend)"
python3 -m pytest tests/host -k gpu_exporter_agrees_with_nvml -p no:cacheprovider -v -rA --no-header \
    --inventory bench/gpu_drill/inventory.py --service-pids "coder=$CODER,general=$GENERAL" 2>&1 | tail -15
