"""Group data of the GPU test machine's guest (bench/gpu_host/inventory.py): the seed's primary
stack at vLLM 0.25.0, from a wheelhouse, with local random-weight checkpoints of the real shapes.

Paths are the device machine's (the controller there); GPU_HOST_* override them for a dry plan
elsewhere, e.g. ``GPU_HOST_MODELS=/tmp/sparse llmhost plan bench/gpu_host/inventory.py``.
"""

import os as _os

_models = _os.environ.get("GPU_HOST_MODELS", "/tmp/gh/awq")

llmhost_stack = "primary"
# The primary stack's services and settings as shipped; only the weights are local: full-size
# random AWQ checkpoints with the real configs (bench/gpu_host/make_awq.py), no hub there.
llmhost_service_overrides = {
    name: {
        "model": {"source": "local", "path": f"{_models}/{d}", "repo": None, "revision": None},
        # flashinfer is stubbed, not carried: vLLM 0.25.0's sampler must not try it (seen:
        # "ModuleNotFoundError: No module named 'flashinfer'").
        "env": {"VLLM_USE_FLASHINFER_SAMPLER": "0"},
        # Pinned as a one-GPU host with several-GPU data would be: CUDA_VISIBLE_DEVICES by UUID.
        "gpus": [0],
    }
    for name, d in (
        ("coder", "deepseek-coder-33B-instruct-AWQ"),
        ("general", "Mistral-7B-Instruct-v0.2-AWQ"),
    )
}
# The newest vLLM whose torch (2.11.0) is the machine's own.
llmhost_vllm_version = "0.25.0"
# Its TCPStore listens on every address (device_run.txt, finding 2): the GPU test machine has no
# network at all, which is the firewall here.
llmhost_vllm_tcpstore_firewalled = True
# An air-gapped site's mirror: torch and its CUDA wheels made from the machine's installed
# distributions, vLLM and its small requirements carried, stubs for kernels not carried
# (bench/gpu_host/stubs.py). No package index.
llmhost_wheelhouse = _os.environ.get("GPU_HOST_WHEELHOUSE", "/tmp/gh/wheelhouse")
llmhost_pip_index = False
llmhost_gateway_clients = {"bench": None}
# A 33B random-weight load plus compile: minutes, not the default half hour.
llmhost_health_timeout_s = 900
llmhost_job_timeout_s = 1800

# Debian's haproxy / prometheus from a local apt repository in the guest; where apt will not take
# them on the guest's Ubuntu 24.04, the run turns these phases off for this host (device_run.txt
# says why).
llmhost_gateway = _os.environ.get("GPU_HOST_GATEWAY", "1") == "1"
llmhost_monitoring = _os.environ.get("GPU_HOST_MONITORING", "1") == "1"

# The bench at one request at a time (ITL against the floor of reading the weights once per
# token); without it, each service's own workload.
if _os.environ.get("GPU_HOST_BENCH_CONCURRENCY"):
    for _svc in llmhost_service_overrides.values():
        _svc["workload"] = {"concurrency": int(_os.environ["GPU_HOST_BENCH_CONCURRENCY"])}

# The rollback drill: a change that cannot serve (a tokenizer that is not there), coder only.
if _os.environ.get("GPU_HOST_BREAK") == "1":
    llmhost_service_overrides["coder"]["extra_args"] = ["--tokenizer", "/nonexistent/tokenizer"]
    # Bounded in case the start hangs instead of failing (the health wait ends when vLLM
    # exits: cced201).
    llmhost_health_timeout_s = 300
