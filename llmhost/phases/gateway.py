"""Gateway: HAProxy from the OS in front of the services: TLS, per-client keys stored as hashes,
routing by the body's ``model``, every other path 404. Its config is rendered beside the live
one, checked with ``haproxy -c``, put in place, then reloaded: a bad config never goes live."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Hostname
from pyinfra.operations import apt, files

from llmhost import gateway, units
from llmhost.applied_plan import AppliedPlan
from llmhost.layout import GATEWAY_DIR, GATEWAY_RUNTIME, GATEWAY_UNIT, GATEWAY_USER, Layout
from llmhost.operations import gateway as ops
from llmhost.phases.preflight import Preflight
from llmhost.settings import Settings

# openssl makes the self-signed certificate (and the checks read certificates with it).
PACKAGES = ["haproxy", "openssl"]


@deploy("Gateway: HAProxy in front of the services")
def install_gateway(settings: Settings, checked: Preflight) -> None:
    layout = Layout(settings)
    if not settings.gateway_clients:
        logger.warning(f"{host.name}: llmhost_gateway_clients is empty: the gateway answers 401")
    apt.packages(name="Install HAProxy and openssl", packages=PACKAGES)
    for path, owner, group, mode in (
        (GATEWAY_DIR, "root", GATEWAY_USER, "750"),
        (layout.gateway_keys_dir, "root", "root", "700"),
    ):
        files.directory(
            name=f"Directory {path}", path=path, user=owner, group=group, mode=mode, present=True
        )
    changed = [_certificate(settings, layout), _clients(settings, layout)]
    plan = AppliedPlan.of(settings, checked.plan, checked.gpu_total_bytes)
    files.template(
        name="Gateway config (candidate)",
        src=units.template("haproxy.cfg.j2"),
        dest=layout.gateway_candidate,
        user="root",
        group=GATEWAY_USER,
        mode="640",
        **gateway.context(settings, plan),
    )
    config = ops.checked_config(
        name="Gateway config: checked with haproxy -c, then live",
        candidate=layout.gateway_candidate,
        live=layout.gateway_config,
        group=GATEWAY_USER,
    )
    dropin = files.template(
        name=f"Drop-in {layout.gateway_dropin}",
        src=units.template("haproxy.dropin.conf.j2"),
        dest=layout.gateway_dropin,
        mode="644",
        create_remote_dir=True,
        config=layout.gateway_config,
        api_key_env=layout.api_key_env,
        run_as=GATEWAY_USER,
        runtime=GATEWAY_RUNTIME,
        services=[svc.served_model_name for svc in settings.services],
    )
    ops.activated(
        name=f"Start or reload {GATEWAY_UNIT}",
        unit=GATEWAY_UNIT,
        restarted=dropin.will_change,
        reloaded=config.will_change or any(op.will_change for op in changed if op),
        sources=[layout.api_key_env, layout.gateway_dropin],
    )


def _certificate(settings: Settings, layout: Layout) -> OperationMeta | None:
    """The controller's certificate and key, or a self-signed pair made on the host once."""
    if settings.tls_cert_file and settings.tls_key_file:
        cert = Path(settings.tls_cert_file).read_text()
        key = Path(settings.tls_key_file).read_text()
        files.put(
            name="Gateway certificate (public)",
            src=StringIO(cert),
            dest=layout.gateway_cert,
            mode="644",
        )
        return files.put(
            name="Gateway certificate and key (0600)",
            src=StringIO(cert.rstrip("\n") + "\n" + key),
            dest=layout.gateway_pem,
            user=GATEWAY_USER,
            group=GATEWAY_USER,
            mode="600",
        )
    if not settings.gateway_tls:
        return None
    return ops.self_signed(
        name="Gateway certificate (self-signed, made once)",
        pem=layout.gateway_pem,
        cert=layout.gateway_cert,
        owner=GATEWAY_USER,
        names=tls_names(settings),
    )


def tls_names(settings: Settings) -> list[str]:
    """What a self-signed certificate is for: the names given, else the host's own name and the
    address the inventory reaches it at; and localhost, for clients through an SSH tunnel."""
    names = list(settings.tls_names)
    if not names:
        reached_at = host.data.get("ssh_hostname")
        names = [host.get_fact(Hostname), *([reached_at] if reached_at else [])]
    return list(dict.fromkeys([*names, "localhost", "127.0.0.1"]))


def _clients(settings: Settings, layout: Layout) -> OperationMeta:
    given = {
        name: gateway.key_hash(Path(path).read_text().strip())
        for name, path in settings.gateway_clients.items()
        if path
    }
    return ops.client_keys(
        name=f"Gateway client keys: {', '.join(sorted(settings.gateway_clients)) or 'none'}",
        keys_dir=layout.gateway_keys_dir,
        map_path=layout.gateway_clients_map,
        owner=GATEWAY_USER,
        given=given,
        generate=sorted(name for name, path in settings.gateway_clients.items() if not path),
    )
