#!/usr/bin/env bash
# The deploy's preflight and VRAM plan on a real GPU host, without changing it: `pyinfra @local
# deploy.py --dry` for each stack, as root on a machine with the NVIDIA driver (the device
# machine: no vLLM, no systemd as PID 1, no network). Shows what preflight reads from
# nvidia-smi, the plan it renders into the units, and its refusals.
# Usage (repo root, llmhost's dependencies importable): bash bench/gpu_preflight/run.sh
set -u
PYINFRA=(python3 -m pyinfra -y @local deploy.py --dry)
# No network there: a wheelhouse naming the pinned vLLM lets the pin check pass; --dry installs
# nothing, so the file's content never matters.
house=$(mktemp -d)
version=$(python3 -c 'from llmhost.settings import data_defaults; print(data_defaults()["llmhost_vllm_version"])')
touch "$house/vllm-$version-cp38-abi3-manylinux_2_31_x86_64.whl"

run() {  # title, pyinfra args...
    echo "=== $1"
    shift
    "${PYINFRA[@]}" "$@" 2>&1 | grep -vE '^\s*$' | sed -n '/Loading: deploy.py/,$p'
}

nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv
run "air-gapped host, no wheelhouse: the pin cannot be checked" --data llmhost_stack=single-vendor
run "stack single-vendor" --data llmhost_stack=single-vendor --data "llmhost_wheelhouse=$house"
run "stack primary, as shipped" --data "llmhost_wheelhouse=$house"
run "stack max-quality" --data llmhost_stack=max-quality --data "llmhost_wheelhouse=$house"
run "driver older than the minimum" --data llmhost_stack=single-vendor \
    --data "llmhost_wheelhouse=$house" --data 'llmhost_min_nvidia_driver="999.0"'
run "wishes that do not fit" --data llmhost_stack=single-vendor --data "llmhost_wheelhouse=$house" \
    --data 'llmhost_service_overrides={"coder": {"concurrency": 16}}'
