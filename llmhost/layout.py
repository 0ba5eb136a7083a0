"""Every host path and name the deploy, the checks and the tools use, from one host's Settings.

The one place each is written: the deploy's phases, the post-deploy checks, the lab's drills and
the benches all read them from here (pure: no pyinfra).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import PurePosixPath

from llmhost.operations.venv import release_id
from llmhost.settings import ServiceSpec, Settings

# Every unit the deploy writes or starts is named so (preflight takes a port held by one for
# the deploy's own).
UNIT_PREFIX = "llmhost-"
# Written last into a finished venv (its content: the release id) and a complete model snapshot.
VENV_STAMP = ".llmhost-installed"
MODEL_MARKER = ".llmhost-complete"
UNIT_DIR = "/etc/systemd/system"
# Monitoring: Debian's prometheus and prometheus-node-exporter packages read these.
PROMETHEUS_DIR = "/etc/prometheus"
PROMETHEUS_UNIT = "prometheus.service"
NODE_EXPORTER_UNIT = "prometheus-node-exporter.service"
GPU_EXPORTER_UNIT = f"{UNIT_PREFIX}gpu-exporter.service"
# GPU hosts: the root oneshot that makes the NVIDIA device nodes before the services start.
DEVICES_UNIT = f"{UNIT_PREFIX}nvidia-devices.service"
DEFAULTS_DIR = "/etc/default"
# Marks the service user as the deploy's own: preflight refuses to take over any other account.
USER_COMMENT = "llmhost services"
NOLOGIN = "/usr/sbin/nologin"

# The gateway (issue 11): Debian's own haproxy.service, with llmhost's drop-in, reading its
# files from a directory of its own (HAProxy runs as the `haproxy` user: it cannot enter
# llmhost_config_dir, which is the service user's).
GATEWAY_UNIT = "haproxy.service"
GATEWAY_USER = "haproxy"
GATEWAY_DIR = "/etc/haproxy/llmhost"
# Where the gateway's metrics frontend serves the token counters.
GATEWAY_USAGE_PATH = "/usage"
# systemd's RuntimeDirectory= for it (/run/<name>): the pid file and the master's socket.
GATEWAY_RUNTIME = "haproxy"
# HAProxy's master CLI (-S): what the deploy asks whether a reload took.
GATEWAY_MASTER = f"/run/{GATEWAY_RUNTIME}/master.sock"


def install_job(venv: str) -> str:
    """The background job (a transient unit) that builds the venv at ``venv``."""
    return f"{UNIT_PREFIX}install-{PurePosixPath(venv).name}.service"


def fetch_job(snapshot: str) -> str:
    """The background job (a transient unit) that downloads the model snapshot at ``snapshot``."""
    return f"{UNIT_PREFIX}fetch-{PurePosixPath(snapshot).name}.service"


def unit_name(service: str) -> str:
    """The systemd unit of the service named ``service``."""
    return f"{UNIT_PREFIX}{service}.service"


def url_host(bind_host: str) -> str:
    """Where a client on the host reaches a service bound to ``bind_host`` (IPv6-safe)."""
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1"}
    host = wildcard.get(bind_host, bind_host)
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    return f"[{host}]" if is_v6 else host


@dataclass(frozen=True)
class Layout:
    settings: Settings

    # The Python env: one venv per release (pins), the services pointed at one of them.
    @property
    def releases_dir(self) -> str:
        return f"{self.settings.base_dir}/venvs"

    @property
    def wheelhouse(self) -> str | None:
        return f"{self.settings.base_dir}/wheelhouse" if self.settings.wheelhouse else None

    @property
    def server_module(self) -> str:
        """The module of vLLM's OpenAI server that a service's launcher loads."""
        if self.settings.launcher == "vllm-serve":
            return "vllm.entrypoints.cli.serve"
        return "vllm.entrypoints.openai.api_server"

    @property
    def packages(self) -> list[str]:
        s = self.settings
        return [f"{s.vllm_package}=={s.vllm_version}", *s.pip_extra]

    @property
    def release_digest(self) -> str:
        """What the release venv's stamp holds once it is installed."""
        s = self.settings
        return release_id(s.python, self.packages, s.pip_remove, self.wheelhouse)

    @property
    def release(self) -> str:
        """The venv of the release this host's data pins."""
        return f"{self.releases_dir}/{self.release_digest[:16]}"

    @property
    def release_name(self) -> str:
        """The release's directory name under ``releases_dir``."""
        return self.release.rsplit("/", 1)[1]

    @property
    def release_stamp(self) -> str:
        return f"{self.release}/{VENV_STAMP}"

    @property
    def tools(self) -> str:
        """The venv hub downloads run from (the pinned hub client alone): it is ready in
        seconds, so the downloads run while the release installs."""
        return f"{self.settings.base_dir}/tools"

    @property
    def tools_stamp(self) -> str:
        return f"{self.tools}/{VENV_STAMP}"

    @property
    def tools_digest(self) -> str:
        """What the tools venv's stamp holds once it is installed."""
        return release_id(self.settings.python, [self.settings.hub_client], [], self.wheelhouse)

    # Models.
    def model_dir(self, svc: ServiceSpec) -> str:
        return f"{self.settings.model_dir}/{svc.model.dirname}"

    def model_marker(self, svc: ServiceSpec) -> str:
        return f"{self.model_dir(svc)}/{MODEL_MARKER}"

    # Secrets and the applied plan.
    @property
    def api_key_env(self) -> str:
        return f"{self.settings.config_dir}/api_key.env"

    @property
    def hf_token(self) -> str:
        return f"{self.settings.config_dir}/hf_token"

    @property
    def plan(self) -> str:
        return f"{self.settings.config_dir}/plan.json"

    # Services.
    @staticmethod
    def unit_name(svc: ServiceSpec) -> str:
        return unit_name(svc.name)

    def unit_path(self, svc: ServiceSpec) -> str:
        return f"{UNIT_DIR}/{self.unit_name(svc)}"

    @property
    def env_dir(self) -> str:
        """Where each unit's ``<name>.env`` is."""
        return self.settings.config_dir

    def env_path(self, svc: ServiceSpec) -> str:
        return f"{self.env_dir}/{svc.name}.env"

    @property
    def good_root(self) -> str:
        return f"{self.settings.config_dir}/good"

    def good_dir(self, svc: ServiceSpec) -> str:
        """Copies of the unit and env file that last answered /health: what rollback restores."""
        return f"{self.good_root}/{svc.name}"

    def good_config_dir(self, daemon: str) -> str:
        """Copies of a daemon's config files that last took live (``gateway``, ``prometheus``):
        what a reload that does not take puts back. Apart from the services' ``good/``, where
        a service may be named like a daemon."""
        return f"{self.settings.config_dir}/good-config/{daemon}"

    def url(self, svc: ServiceSpec, path: str) -> str:
        return f"http://{url_host(self.settings.bind_host)}:{svc.port}{path}"

    def health_url(self, svc: ServiceSpec) -> str:
        return self.url(svc, "/health")

    # Monitoring (llmhost/monitoring/phase.py).
    @property
    def prometheus_config(self) -> str:
        return f"{PROMETHEUS_DIR}/prometheus.yml"

    @property
    def prometheus_rules(self) -> str:
        return f"{PROMETHEUS_DIR}/llmhost-rules.yml"

    @property
    def prometheus_defaults(self) -> str:
        """Debian's unit reads Prometheus's flags from here (``ARGS=``)."""
        return f"{DEFAULTS_DIR}/prometheus"

    @property
    def node_exporter_defaults(self) -> str:
        return f"{DEFAULTS_DIR}/prometheus-node-exporter"

    @property
    def export_dir(self) -> str:
        """``llmhost_monitoring = "export"``: scrape config and rules for the user's Prometheus."""
        return f"{self.settings.config_dir}/prometheus"

    @property
    def export_scrape_config(self) -> str:
        return f"{self.export_dir}/llmhost-scrape.yml"

    @property
    def export_rules(self) -> str:
        return f"{self.export_dir}/llmhost-rules.yml"

    @property
    def gpu_exporter_script(self) -> str:
        return f"{self.gpu_exporter_dir}/gpu_exporter.py"

    @property
    def gpu_exporter_unit_path(self) -> str:
        return f"{UNIT_DIR}/{GPU_EXPORTER_UNIT}"

    @property
    def devices_unit_path(self) -> str:
        return f"{UNIT_DIR}/{DEVICES_UNIT}"

    @property
    def gpu_exporter_dir(self) -> str:
        return f"{self.settings.base_dir}/monitoring"

    def monitoring_address(self, port: int) -> str:
        """``host:port`` of a monitoring component, as reached from the host itself."""
        return f"{url_host(self.settings.monitoring_bind_host)}:{port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.monitoring_address(self.settings.prometheus_port)}"

    def service_address(self, svc: ServiceSpec) -> str:
        return f"{url_host(self.settings.bind_host)}:{svc.port}"

    # The gateway: HAProxy's config, the client-key hashes, the TLS certificate; the keys
    # generated for clients stay root's, in llmhost_config_dir.
    @property
    def gateway_config(self) -> str:
        return f"{GATEWAY_DIR}/haproxy.cfg"

    @property
    def gateway_candidate(self) -> str:
        """Where the config is rendered and checked with `haproxy -c` before it goes live."""
        return f"{GATEWAY_DIR}/haproxy.cfg.candidate"

    @property
    def gateway_lua(self) -> str:
        """The gateway's Lua: the token counting filter and its counters, the log's user."""
        return f"{GATEWAY_DIR}/gateway.lua"

    @property
    def gateway_clients_map(self) -> str:
        """``<sha256 hex of the key> <client name>`` per line, 0600, the gateway's own."""
        return f"{GATEWAY_DIR}/clients.map"

    @property
    def gateway_pem(self) -> str:
        """The certificate chain and its private key in one file, as HAProxy reads them."""
        return f"{GATEWAY_DIR}/tls.pem"

    @property
    def gateway_cert(self) -> str:
        """The certificate alone, world-readable: what clients of a self-signed one trust."""
        return f"{GATEWAY_DIR}/tls.crt"

    @property
    def gateway_dropin_dir(self) -> str:
        return f"{UNIT_DIR}/{GATEWAY_UNIT}.d"

    @property
    def gateway_dropin(self) -> str:
        return f"{self.gateway_dropin_dir}/llmhost.conf"

    @property
    def gateway_keys_dir(self) -> str:
        """Keys generated for clients, 0600 root, for the operator to hand out."""
        return f"{self.settings.config_dir}/gateway-keys"

    def gateway_key(self, client: str) -> str:
        return f"{self.gateway_keys_dir}/{client}"

    @property
    def gateway_url(self) -> str:
        """The gateway's base URL as a client on the host reaches it."""
        s = self.settings
        scheme = "https" if s.gateway_tls else "http"
        return f"{scheme}://{url_host(s.gateway_bind)}:{s.gateway_port}"

    @property
    def gateway_metrics_address(self) -> str:
        """HAProxy's Prometheus exporter, loopback only (the monitoring phase scrapes it)."""
        return f"127.0.0.1:{self.settings.gateway_metrics_port}"

    @property
    def gateway_metrics_url(self) -> str:
        return f"http://{self.gateway_metrics_address}/metrics"

    @property
    def gateway_usage_url(self) -> str:
        """The token counters per client and model (gateway.lua), beside /metrics."""
        return f"http://{self.gateway_metrics_address}{GATEWAY_USAGE_PATH}"

    @property
    def owned_paths(self) -> list[str]:
        """The files and directories the phases write whole: preflight reads their state in
        its one command, and a phase skips those already as it would write them."""
        s = self.settings
        return [
            s.base_dir, s.model_dir, s.cache_dir, s.config_dir, self.plan, self.api_key_env,
            self.hf_token,
            *(p for svc in s.instances for p in (self.unit_path(svc), self.env_path(svc))),
            GATEWAY_DIR, self.gateway_keys_dir, self.gateway_dropin_dir, self.gateway_candidate,
            self.gateway_dropin, self.gateway_cert, self.gateway_pem, self.gateway_lua,
            self.node_exporter_defaults, self.prometheus_defaults, self.gpu_exporter_dir,
            self.gpu_exporter_script, self.gpu_exporter_unit_path, self.devices_unit_path,
            self.export_dir, self.export_scrape_config, self.export_rules,
        ]  # fmt: skip
