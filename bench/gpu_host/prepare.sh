#!/usr/bin/env bash
# Here (Debian 12, network): everything the GPU test machine needs, as chunks that fit one `run`
# call each (64 MiB with the tree), in the git-ignored .gpu/ (add /.gpu/ to .git/info/exclude).
#   .gpu/parts/p.00 ..  one tar: payload/{vllm,real,ctl,debs,aptrepo}/ and payload/stubs.txt
#   .gpu/tok/           the lab's small tokenizer (make_awq.py copies it into the checkpoints)
# vLLM 0.25.0's full requirement set was resolved here for Python 3.12 (pip --dry-run --report);
# what the machine's /opt/torch/.venv already has (torch, CUDA libraries, transformers, numpy...)
# is made into wheels there (wheelhouse.py); the kernels listed in HEAVY are stubbed (stubs.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
G=.gpu; P=$G/payload; mkdir -p $P/{vllm,real,ctl,debs,aptrepo} $G/parts $G/tok
plat=(); for n in $(seq 5 39); do plat+=(--platform "manylinux_2_${n}_x86_64"); done
plat+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64
       --platform linux_x86_64 --platform any)
dl() { python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" "$@"; }
# 1. vLLM's closure for cp312, and the split: carried for real / stubbed / already on the machine.
[ -s $G/closure.json ] || python3 -m pip install -q --dry-run --ignore-installed --report $G/closure.json \
  --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" --target /tmp/closure vllm==0.25.0
python3 bench/gpu_host/split_closure.py $G/closure.json $P/stubs.txt > $G/real.txt
# Each download only where its folder is still empty (a re-run keeps what it has).
has() { [ -n "$(ls "$1")" ]; }
has $P/vllm || dl --no-deps -d $P/vllm vllm==0.25.0
# Only the pins that have no wheel here yet (a re-run downloads nothing twice).
python3 -c 'import re, sys, pathlib
have = {(re.sub(r"[-_.]+", "-", w.name.split("-")[0]).lower(), w.name.split("-")[1])
        for w in pathlib.Path(sys.argv[2]).glob("*.whl")}
for pin in open(sys.argv[1]).read().split():
    if tuple(pin.split("==")) not in have: print(pin)' $G/real.txt $P/real > $G/real-todo.txt
[ -s $G/real-todo.txt ] && dl --no-deps --abi cp312 --abi abi3 --abi none -d $P/real -r $G/real-todo.txt
# vLLM wants setuptools<81 (torch.utils.cpp_extension imports it; the resolution above took 81.0.0
# and the machine has none): a stub there broke the import check, so a real one is carried.
rm -f $P/real/setuptools-81*; [ -e $P/real/setuptools-80.9.0-py3-none-any.whl ] || dl --no-deps -d $P/real setuptools==80.9.0
# 2. The controller's own: pyinfra, llmhost's requirements, the post-deploy checks.
has $P/ctl || dl -d $P/ctl pyinfra==3.10.0 'jinja2>=3.1' 'huggingface-hub>=0.34' 'nvidia-ml-py>=12.0' \
  'prometheus-client>=0.18' 'pyyaml>=6' 'pydantic>=2.7' 'packaging>=22' 'pytest>=8' \
  pytest-testinfra==10.2.2 'openai>=3.57'
for f in $P/ctl/*.whl; do [ -e "$P/real/$(basename "$f")" ] && rm "$f"; done
# 3. The guest's systemd/sshd (../shared/gpu/guest/debs.txt) and the gateway/monitoring packages
#    in a local apt repository (Debian 12's; Ubuntu 24.04 has the libraries they link).
has $P/debs || (cd $P/debs && apt-get download $(cat ../../../bench/gpu_host/debs.txt) >/dev/null)
has $P/aptrepo || (cd $P/aptrepo && apt-get download haproxy prometheus prometheus-node-exporter liblua5.3-0 \
  libopentracing-c-wrapper0 libopentracing1 lsb-base fonts-glyphicons-halflings javascript-common \
  libjs-bootstrap libjs-bootstrap4 libjs-d3 libjs-eonasdan-bootstrap-datetimepicker libjs-jquery \
  libjs-jquery-hotkeys libjs-moment libjs-moment-timezone libjs-mustache libjs-popper.js \
  libjs-rickshaw >/dev/null && dpkg-scanpackages . > Packages 2>/dev/null)
# 4. The tokenizer, then the chunks.
.venv/bin/python -c "from pathlib import Path; from llmhost_lab import tinymodel as t; t.generate(Path('/tmp/gh-tok'), name='tok')"
cp /tmp/gh-tok/tokenizer.json /tmp/gh-tok/tokenizer_config.json $G/tok/
rm -f $G/parts/p.*
tar -cf - -C $G payload | split -b 62000000 -d -a 2 - $G/parts/p.
ls -la $G/parts; du -sh $P/*
