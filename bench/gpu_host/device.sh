#!/usr/bin/env bash
# The harness's device side, one verb per `run` call (repo root, as root, on the GPU test machine).
# Calls must follow each other within 30 s (the machine goes back when idle): long work runs
# under setsid with logs in /tmp/gh, and every call ends by copying what there is to $OUT.
#   device.sh start              carry .gpu/parts/p.00 .gpu/tok: keep the chunk, read the machine,
#                                start the checkpoints (GPU) and the site wheelhouse (CPU)
#   device.sh stash N            carry .gpu/parts/p.0N: keep it
#   device.sh setup              unpack, finish the wheelhouse, controller venv, boot the guest,
#                                start scenario.sh (the measured run) under setsid
#   device.sh poll SECONDS       wait for the scenario (or SECONDS), show its progress
set -u
GH=/tmp/gh
RUN=$GH/run
here=$(dirname "$(readlink -f "$0")")
repo=$(cd "$here/../.." && pwd)
mkdir -p $GH/parts $RUN
OUT=${OUT:-/tmp/gh/out}
mkdir -p "$OUT"
say() { echo "[$(date +%T)] $*" | tee -a $RUN/device.log; }

collect() {  # the run's files so far, as one archive (at most 8 files come back)
  tar -czf "$OUT/run.tgz" -C $GH run --exclude='*.whl' 2>/dev/null
  cp $RUN/summary.json "$OUT/" 2>/dev/null
  tail -n 40 $RUN/progress.log 2>/dev/null
}

bg() {  # name command...: run in a session of its own, outliving this call
  local name=$1; shift
  setsid nohup bash -c "$*; echo \"exit \$?\" >> $RUN/$name.done" > $RUN/$name.log 2>&1 < /dev/null &
}

case ${1:-} in
start)
  cp .gpu/parts/p.00 $GH/parts/ && mkdir -p $GH/tok && cp .gpu/tok/* $GH/tok/
  {
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader
    df -h /tmp | tail -1; nproc; free -g | head -2; python3 --version; uname -r
    ls /usr/local/nvidia/bin 2>&1 | head; command -v nvidia-smi curl ip; hostname -I
    python3 -c 'import importlib.metadata as m; print(sorted(f"{d.name}=={d.version}" for d in m.distributions()))'
  } > $RUN/machine.txt 2>&1
  cat $RUN/machine.txt | cut -c1-3000
  # Both checkpoints on the GPU (~1-2 min), the wheels of what /opt/torch/.venv has (CPU).
  bg models "(for m in deepseek-coder-33B-instruct-AWQ Mistral-7B-Instruct-v0.2-AWQ; do
      python3 $here/make_awq.py $repo/llmhost/plan/catalogue/TheBloke--\$m.json $GH/tok $GH/awq/\$m || exit 1; done)"
  site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  bg site "python3 $here/wheelhouse.py $site $GH/wheelhouse --skip pip wheel uv"
  sleep 5; tail -3 $RUN/models.log $RUN/site.log
  collect ;;
stash)
  cp ".gpu/parts/p.0$2" $GH/parts/ && ls $GH/parts | tr '\n' ' '; echo
  tail -2 $RUN/models.log; tail -1 $RUN/site.log; cat $RUN/*.done 2>/dev/null
  df -h /tmp | tail -1 ;;
setup)
  t0=$(date +%s)
  for _ in $(seq 1 120); do [ -f $RUN/models.done ] && [ -f $RUN/site.done ] && break; sleep 2; done
  say "models: $(tail -2 $RUN/models.log | tr '\n' ' ') $(cat $RUN/models.done)"
  # No checkpoints, no run: say so now, not after minutes of a deploy that cannot start.
  grep -qx "exit 0" $RUN/models.done 2>/dev/null || { say "the checkpoints failed (models.log)"; collect; exit 1; }
  say "site wheels: $(tail -1 $RUN/site.log) $(cat $RUN/site.done)"
  rm -rf $GH/payload && cat $GH/parts/p.* | tar -x -C $GH || { say "payload unpack failed"; exit 1; }
  cp $GH/payload/real/*.whl $GH/payload/vllm/*.whl $GH/wheelhouse/
  # The deploy pushes every file of the wheelhouse: only wheels there.
  python3 $here/stubs.py make $GH/wheelhouse $(cat $GH/payload/stubs.txt) >> $RUN/stubs.log
  /usr/bin/python3 -m venv $GH/rv && python3 $here/stubs.py resolve $GH/wheelhouse $GH/rv/bin/pip >> $RUN/stubs.log 2>&1
  say "wheelhouse: $(ls $GH/wheelhouse | wc -l) wheels, $(du -sh $GH/wheelhouse | cut -f1); $(tail -1 $RUN/stubs.log); stubs: $(tr '\n' ' ' < $GH/stubs.txt)"
  # The run reads the tree from a copy of its own: each call replaces the one it came with. A
  # carried .gpu/tree.tar (`git archive -o .gpu/tree.tar HEAD`) is a commit's tree, without
  # what the working tree has uncommitted.
  rm -rf $GH/repo && mkdir -p $GH/repo
  if [ -f .gpu/tree.tar ]; then tar -xf .gpu/tree.tar -C $GH/repo
  else tar -cf - --exclude=.gpu -C "$repo" . | tar -xf - -C $GH/repo; fi
  say "tree: $(cat .gpu/tree.commit 2>/dev/null || echo working tree)"
  repo=$GH/repo; here=$repo/bench/gpu_host
  # The controller: pyinfra, the checks and the llmhost command, from wheels, in a venv of its own.
  /usr/bin/python3 -m venv $GH/ctl && $GH/ctl/bin/pip install -q --no-index --find-links $GH/payload/ctl \
    --find-links $GH/payload/real pyinfra==3.10.0 jinja2 huggingface-hub nvidia-ml-py prometheus-client \
    pyyaml pydantic packaging pytest pytest-testinfra==10.2.2 openai setuptools >> $RUN/ctl.log 2>&1 \
    && $GH/ctl/bin/pip install -q --no-index --no-deps --no-build-isolation -e "$repo" >> $RUN/ctl.log 2>&1
  say "controller venv: rc $? $($GH/ctl/bin/llmhost --help >/dev/null 2>&1 && echo llmhost ok)"
  # The pre-seeded model store: the same files the controller holds (hard links, no copy); the
  # deploy compares them by content and writes its marker as on any host.
  for m in $GH/awq/*; do mkdir -p $GH/store/$(basename $m) && ln -f $m/* $GH/store/$(basename $m)/; done
  bash $here/guest.sh boot $GH/payload/debs $GH/payload/aptrepo >> $RUN/guest.log 2>&1
  say "guest: $(tail -1 $RUN/guest.log)"
  bash $here/guest.sh ssh 'apt-get update -q 2>&1 | tail -2; systemctl is-system-running; nvidia-smi -L' >> $RUN/guest.log 2>&1
  say "guest apt/systemd/gpu: $(tail -3 $RUN/guest.log | tr '\n' ' ')"
  # The product's GPU exporter unit, as the deploy renders it, on the machine's own Python:
  # the second deploy of the last run restarted it each time (device_run.txt, finding 2).
  $GH/ctl/bin/python - > $GH/diag.service 2>> $RUN/guest.log <<'PY'
from llmhost.render import render
argv = "/opt/torch/.venv/bin/python /opt/llmhost-diag/gpu_exporter.py --port 9899"
print(render("monitoring/gpu-exporter.service.j2", {"exec_start": argv, "address": "diag"}))
PY
  G() { bash $here/guest.sh ssh "$@"; }
  G 'mkdir -p /opt/llmhost-diag && cat > /opt/llmhost-diag/gpu_exporter.py' < $repo/llmhost/monitoring/gpu_exporter.py
  G 'cat > /etc/systemd/system/llmhost-diag.service' < $GH/diag.service
  G 'systemctl daemon-reload; systemctl start llmhost-diag; sleep 6; systemctl show llmhost-diag -p SubState -p NRestarts -p Result -p ExecMainStatus; journalctl -u llmhost-diag --no-pager -o cat | tail -25; curl -s 127.0.0.1:9899/metrics | grep -c "^llmhost_gpu"; systemctl stop llmhost-diag; rm /etc/systemd/system/llmhost-diag.service; systemctl daemon-reload' > $RUN/exporter-diag.txt 2>&1
  say "exporter diag: $(cut -c1-200 $RUN/exporter-diag.txt | tr '\n' '|' | cut -c1-1500)"
  say "setup took $(( $(date +%s) - t0 )) s"
  (cd "$repo" && bg scenario "bash $here/scenario.sh")
  sleep 20; collect ;;
poll)
  end=$(( $(date +%s) + ${2:-500} ))
  while [ "$(date +%s)" -lt $end ] && [ ! -f $RUN/scenario.done ]; do sleep 5; done
  cat $RUN/scenario.done 2>/dev/null
  collect ;;
*) echo "usage: device.sh start|stash N|setup|poll SECONDS"; exit 2 ;;
esac
