# Every llmhost knob with its default. Hosts and groups override them in their own data
# (group_data/<group>.py or the inventory); llmhost/settings.py validates them all before any
# operation is added, so a typo fails with the key's name. The README has a row for each key.

# The host has an NVIDIA GPU: preflight checks the driver and the planner sizes VRAM.
llmhost_gpu = True
# Named stack of two services (llmhost/stacks.py): "primary", "single-vendor", "max-quality".
llmhost_stack = "primary"
# Explicit list of service dicts; when set it replaces the stack's services.
llmhost_services = None
# Per-service changes on top of the stack, e.g. {"coder": {"max_model_len": 8192}}.
llmhost_service_overrides = {}

# Unprivileged user the services run as.
llmhost_user = "vllm"
# The venv lives in <base_dir>/venv.
llmhost_base_dir = "/opt/llmhost"
# One directory per model snapshot (a separate disk survives a rebuild).
llmhost_model_dir = "/srv/llmhost/models"
# HF and vLLM caches (compile cache, hub metadata).
llmhost_cache_dir = "/var/cache/llmhost"
# Env files and secrets (0600, owned by the service user).
llmhost_config_dir = "/etc/llmhost"

# Interpreter the venv is made with (>= 3.10).
llmhost_python = "python3"
# The pinned vLLM: reinstalled only when this pin changes.
llmhost_vllm_package = "vllm"
llmhost_vllm_version = "0.33.0"
# More requirements installed with vLLM (pins for its dependencies).
llmhost_pip_extra = []
# Packages removed after the install (ones a build pulls in that break it).
llmhost_pip_remove = []
# Directory of wheel files on the controller, pushed and used with --find-links (air-gapped).
llmhost_wheelhouse = None
# False: pip installs from the wheelhouse alone (--no-index), e.g. on a host without an index.
llmhost_pip_index = True
# pip's cache on the host (None: pip's default under the root user's home).
llmhost_pip_cache_dir = None
# How a unit starts vLLM: "vllm-serve" (the vllm console script) or "api-server-module".
llmhost_launcher = "vllm-serve"
# Address the services listen on: an IP address, or a name that resolves on the host.
llmhost_bind_host = "127.0.0.1"
# Allow a bind beyond loopback, accepting that vLLM's /metrics, /tokenize, /pause and more
# answer there without the API key.
llmhost_bind_public = False

# Largest sum of --gpu-memory-utilization over the services on one GPU.
llmhost_gpu_memory_cap = 0.90
# GPU memory that must stay free once both services run (post-deploy check).
llmhost_gpu_headroom_gib = 2.0
# CPU build only: KV cache space per service in GiB (None: the planner sizes it).
llmhost_cpu_kv_cache_gib = None
# Oldest NVIDIA driver the pinned vLLM's CUDA build runs on (CUDA 13 needs the 580 branch).
llmhost_min_nvidia_driver = "580.65.06"
# Seconds a service may take from start to a 200 on /health (a 33B load takes minutes).
llmhost_health_timeout_s = 1800

# File on the controller holding the API key (None: one is generated on the host and kept).
llmhost_api_key_file = None
# File on the controller holding the HF token for gated repos (None: $HF_TOKEN if set).
llmhost_hf_token_file = None
# The pinned huggingface-hub that hub downloads run with, in a venv of its own
# (<base_dir>/tools), so the downloads run while vLLM installs.
llmhost_hub_client = "huggingface-hub==2.4.0"
# Seconds the deploy waits for the venv install and the model downloads (background jobs).
llmhost_job_timeout_s = 6 * 3600

# Post-deploy load smoke: concurrent requests per service.
llmhost_load_requests = 16

# Monitoring (README "Monitoring"): True: Prometheus + node exporter (+ the GPU exporter on GPU
# hosts) on the host; "export": only a scrape config and rules for your own Prometheus; False.
llmhost_monitoring = True
# Address Prometheus and the exporters listen on, and their ports.
llmhost_monitoring_bind_host = "127.0.0.1"
llmhost_prometheus_port = 9090
llmhost_node_exporter_port = 9100
llmhost_gpu_exporter_port = 9835
# Scrape and rule-evaluation interval.
llmhost_monitoring_interval_s = 15
# Alert thresholds: a target down this long (LLMServiceDown, LLMTargetDown); how long
# LLMServiceRestarted fires after a restart; KV cache usage (0-1) above which, for how long,
# LLMKVCacheFull fires; requests waiting how long (LLMRequestsQueued); GPU memory a service may
# use above its plan (LLMServiceGPUOverPlan) and how long it, or free memory below
# llmhost_gpu_headroom_gib (LLMGPUHeadroomLow), must last.
llmhost_alert_down_for_s = 60
llmhost_alert_restart_window_s = 900
llmhost_alert_kv_cache_usage = 0.9
llmhost_alert_kv_cache_for_s = 300
llmhost_alert_waiting_for_s = 300
llmhost_alert_gpu_tolerance_mib = 512
llmhost_alert_gpu_for_s = 120

# --- The gateway: HAProxy (OS package) in front of the services, one OpenAI endpoint.
# Put the gateway in front of the services: one endpoint, TLS, per-client keys.
llmhost_gateway = True
# Address the gateway listens on ("0.0.0.0": every IPv4 address; "::": IPv6 too).
llmhost_gateway_bind = "0.0.0.0"
# The gateway's port (HTTPS unless llmhost_gateway_tls is False).
llmhost_gateway_port = 443
# Serve TLS; False serves plain HTTP (only behind a TLS layer of your own).
llmhost_gateway_tls = True
# Client name -> controller file with its key, or None: a key generated on the host once, in
# <config_dir>/gateway-keys/<name> (0600 root). Only sha256 hashes reach the gateway.
llmhost_gateway_clients = {}
# Requests per minute per client (None: no limit).
llmhost_gateway_rate_limit = None
# HAProxy's Prometheus exporter, on 127.0.0.1 only, at /metrics.
llmhost_gateway_metrics_port = 8404
# Controller files with the gateway's certificate chain and its key (None: self-signed on the host).
llmhost_tls_cert_file = None
llmhost_tls_key_file = None
# Names a self-signed certificate is for (empty: the host's name; localhost is always added).
llmhost_tls_names = []
