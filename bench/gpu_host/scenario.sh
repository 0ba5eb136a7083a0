#!/usr/bin/env bash
# The measured run, on the GPU test machine against the booted guest (device.sh setup starts it
# under setsid from the repo root). The product is used as a user would: pyinfra with the
# unchanged deploy.py, pytest tests/host, llmhost status / plan. Each step logs to /tmp/gh/run and
# appends to progress.log; summary.py turns the files into summary.json after every step.
set -u
GH=/tmp/gh
RUN=$GH/run
here=$(dirname "$(readlink -f "$0")")
INV=bench/gpu_host/inventory.py
export PATH=$GH/ctl/bin:$GH/bin:$PATH PYTHONUNBUFFERED=1
G() { bash "$here/guest.sh" ssh "$@"; }
now() { date +%s.%N; }
since() { awk "BEGIN{printf \"%.1f\", $(now) - $1}"; }
step() { echo "[$(date +%T)] $*" | tee -a $RUN/progress.log; }
event() { echo "$1 $(now)" >> $RUN/events.txt; }
summary() { python3 "$here/summary.py" $RUN > $RUN/summary.json 2>> $RUN/summary.err; }
healthy() { curl -fs -m 2 "http://127.0.0.1:$1/health" > /dev/null 2>&1; }
wait_healthy() {  # port timeout_s: seconds until /health answers 200, or -1
  local t0; t0=$(now)
  while [ "$(awk "BEGIN{print int($(now) - $t0)}")" -lt "$2" ]; do
    healthy "$1" && { since "$t0"; return 0; }
    sleep 0.5
  done
  echo -1; return 1
}
journals() {  # tag: both units' journals of this boot, unix timestamps
  for s in coder general; do
    G "journalctl -b -u llmhost-$s -o short-unix --no-pager" > "$RUN/journal-$1-$s.txt" 2>&1
  done
}
show() {  # MainPID and NRestarts of a unit
  G "systemctl show llmhost-$1 -p MainPID -p NRestarts -p ActiveState --value" | tr '\n' ' '
}
nvml() {  # tag: per-process GPU memory on the machine, with each process's unit (from its cgroup)
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits | while IFS=', ' read -r pid mib; do
    unit=$(grep -o 'llmhost-[a-z0-9-]*\.service' "/proc/$pid/cgroup" 2>/dev/null | head -1)
    echo "$pid $mib ${unit:-?} $(tr '\0' ' ' < /proc/$pid/cmdline 2>/dev/null | cut -c1-80)"
  done > "$RUN/nvml-$1.txt"
  nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader,nounits > "$RUN/gpu-$1.txt"
}

bench() {  # 3b: one request at a time, then each service's workload
  step "3b. llmhost bench: one request at a time, then each service's workload"
  # GPU_HOST_BENCH_C1_S=0: no run at one request at a time.
  echo skipped > $RUN/bench-c1.rc
  [ "${GPU_HOST_BENCH_C1_S:-10}" = 0 ] || { GPU_HOST_BENCH_CONCURRENCY=1 timeout 600 llmhost bench "$INV" \
    --duration "${GPU_HOST_BENCH_C1_S:-10}" --json $RUN/bench-c1.json > $RUN/bench-c1.log 2>&1;
    echo $? > $RUN/bench-c1.rc; }
  timeout 900 llmhost bench "$INV" --duration "${GPU_HOST_BENCH_S:-20}" --json $RUN/bench.json \
    > $RUN/bench.log 2>&1; echo $? > $RUN/bench.rc
  step "   bench rc $(cat $RUN/bench-c1.rc) / $(cat $RUN/bench.rc)"
  summary
}

: > $RUN/progress.log; : > $RUN/events.txt
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $RUN/gpu.txt

step "1. fresh deploy: pyinfra $INV deploy.py"
event deploy1.start
pyinfra -y "$INV" deploy.py > $RUN/deploy1.log 2>&1
echo $? > $RUN/deploy1.rc; event deploy1.end
step "   rc $(cat $RUN/deploy1.rc); $(grep -a 'llmhost phases done' $RUN/deploy1.log | tail -1)"
if [ "$(cat $RUN/deploy1.rc)" != 0 ] && ! G "apt-get install -y --no-install-recommends haproxy prometheus prometheus-node-exporter" > $RUN/apt-try.log 2>&1; then
  # Debian's packages did not install on this Ubuntu guest: say why, then this host runs
  # without those phases (data: GPU_HOST_GATEWAY / GPU_HOST_MONITORING, group_data.py).
  step "   gateway/monitoring packages failed (apt-try.log); deploying with those phases off"
  export GPU_HOST_GATEWAY=0 GPU_HOST_MONITORING=0
  echo "gateway=0 monitoring=0" > $RUN/phases-off.txt
  event deploy1b.start
  pyinfra -y "$INV" deploy.py > $RUN/deploy1b.log 2>&1
  echo $? > $RUN/deploy1b.rc; event deploy1b.end
  step "   rc $(cat $RUN/deploy1b.rc); $(grep -a 'llmhost phases done' $RUN/deploy1b.log | tail -1)"
fi
journals deploy1; nvml deploy1
G "systemctl show llmhost-gpu-exporter -p SubState -p NRestarts -p ExecMainStartTimestamp; journalctl -u llmhost-gpu-exporter --no-pager -o short-unix | tail -30" > $RUN/exporter.txt 2>&1
G "cat /etc/llmhost/plan.json" > $RUN/applied-plan.json 2>&1
G "systemctl cat llmhost-coder llmhost-general; ls /etc/systemd/system; grep -H ^CUDA_ /etc/llmhost/*.env" > $RUN/units.txt 2>&1
summary
healthy 8001 && healthy 8002 || step "   not both healthy after the deploy: $(show coder) / $(show general)"
# The numbers first (device time is short), then the checks, the re-run and the drills.
bench
# A bench-only run: the rest ran in a full one.
[ "${GPU_HOST_ONLY_BENCH:-0}" = 1 ] && { journals final; step "done"; exit 0; }

step "2. pytest tests/host --inventory $INV"
timeout 900 python3 -m pytest tests/host --inventory "$INV" -p no:cacheprovider -rA --no-header \
  > $RUN/pytest.log 2>&1
echo $? > $RUN/pytest.rc
step "   $(tail -1 $RUN/pytest.log)"
timeout 120 llmhost status "$INV" > $RUN/status.log 2>&1; echo $? > $RUN/status.rc
total=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
llmhost plan "$INV" --gpu-memory "${total}MiB" --json > $RUN/plan.json 2>&1
summary

step "3. second deploy (no change expected)"
event deploy2.start
pyinfra -y "$INV" deploy.py > $RUN/deploy2.log 2>&1
echo $? > $RUN/deploy2.rc; event deploy2.end
step "   rc $(cat $RUN/deploy2.rc); $(grep -a 'llmhost phases done' $RUN/deploy2.log | tail -1)"
G "systemctl show llmhost-gpu-exporter -p SubState -p NRestarts -p ExecMainStartTimestamp; journalctl -u llmhost-gpu-exporter --no-pager -o short-unix | tail -30" > $RUN/exporter2.txt 2>&1
summary

step "4. a change that cannot serve (coder: --tokenizer /nonexistent/tokenizer)"
echo "general before: $(show general)" > $RUN/rollback.txt
event rollback.start
t0=$(now)
GPU_HOST_BREAK=1 pyinfra -y "$INV" deploy.py > $RUN/rollback.log 2>&1
echo "deploy rc $? after $(since "$t0") s" >> $RUN/rollback.txt
w=$(wait_healthy 8001 600)
echo "healthy_s $(since "$t0") (wait after the deploy $w)" >> $RUN/rollback.txt
echo "general after: $(show general)" >> $RUN/rollback.txt
G "grep -h -- --tokenizer /etc/systemd/system/llmhost-coder.service /etc/llmhost/coder.env 2>/dev/null | head -3; echo units-with-tokenizer: \$?" >> $RUN/rollback.txt 2>&1
step "   $(tr '\n' ';' < $RUN/rollback.txt)"
summary
step "5. kill -9 of coder's EngineCore"
before_general=$(show general); echo "general before: $before_general" > $RUN/kill.txt
engine=""
for p in $(grep -l 'llmhost-coder\.service' /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3); do
  grep -q EngineCore "/proc/$p/cmdline" "/proc/$p/comm" 2>/dev/null && engine="$engine $p"
done
echo "coder EngineCore pids (machine's view):$engine" >> $RUN/kill.txt
if [ -n "$engine" ]; then
  t0=$(now); kill -9 $engine; event kill
  for _ in $(seq 1 60); do healthy 8001 || break; sleep 0.5; done
  echo "down after $(since "$t0") s" >> $RUN/kill.txt
  while healthy 8001 && [ "$(awk "BEGIN{print int($(now) - $t0)}")" -lt 60 ]; do sleep 0.5; done
  w=$(wait_healthy 8001 600)
  echo "healthy_s $(awk "BEGIN{printf \"%.1f\", $(now) - $t0}") (wait $w)" >> $RUN/kill.txt
  echo "general after: $(show general)" >> $RUN/kill.txt
  echo "coder after: $(show coder)" >> $RUN/kill.txt
fi
step "   $(tr '\n' ';' < $RUN/kill.txt)"
summary

step "6. guest reboot: clean power-off, boot the same root, no deploy"
event reboot.stop
bash "$here/guest.sh" stop >> $RUN/reboot.txt 2>&1
event reboot.start
bash "$here/guest.sh" start >> $RUN/reboot.txt 2>&1
tb=$(cat /tmp/g/boot.t)
c=-1; g=-1
while [ "$(awk "BEGIN{print int($(now) - $tb)}")" -lt 900 ]; do
  [ "$c" = -1 ] && healthy 8001 && c=$(since "$tb") && event reboot.coder_healthy
  [ "$g" = -1 ] && healthy 8002 && g=$(since "$tb") && event reboot.general_healthy
  [ "$c" != -1 ] && [ "$g" != -1 ] && break
  sleep 0.5
done
echo "coder_healthy_s $c general_healthy_s $g (from nspawn start)" >> $RUN/reboot.txt
journals reboot; nvml reboot
G "systemctl show llmhost-coder llmhost-general -p Id -p ExecMainStartTimestamp -p ActiveEnterTimestamp --timestamp=unix; systemctl is-active haproxy prometheus prometheus-node-exporter; systemctl --failed --no-legend" >> $RUN/reboot.txt 2>&1
step "   $(grep healthy_s $RUN/reboot.txt)"
summary

journals final
step "done"
