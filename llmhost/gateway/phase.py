"""Gateway: HAProxy from the OS in front of the services: TLS, per-client keys stored as hashes,
routing by the body's ``model``, every other path 404. Its config is rendered beside the live
one, checked with ``haproxy -c``, put in place, then reloaded: a bad config never goes live."""

from __future__ import annotations

import json
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Hostname
from pyinfra.operations import apt

from llmhost.checked import Checked
from llmhost.facts.batch import fact
from llmhost.gateway import config as gateway
from llmhost.gateway import operations as ops
from llmhost.layout import (
    GATEWAY_DIR,
    GATEWAY_MASTER,
    GATEWAY_RUNTIME,
    GATEWAY_UNIT,
    GATEWAY_USER,
    Layout,
)
from llmhost.operations import services
from llmhost.remote import agent
from llmhost.remote import run as remote
from llmhost.render import render
from llmhost.secret_files import read_secret
from llmhost.settings import Settings

# openssl makes the self-signed certificate (and the checks read certificates with it).
PACKAGES = ["haproxy", "openssl"]
GATEWAY_LUA = Path(__file__).with_name("gateway.lua")


@deploy("Gateway: HAProxy in front of the services")
def install_gateway(settings: Settings, checked: Checked) -> None:
    layout = Layout(settings)
    if not settings.gateway_clients:
        logger.warning(f"{host.name}: llmhost_gateway_clients is empty: the gateway answers 401")
    if not checked.installed(PACKAGES):
        apt.packages(name="Install HAProxy and openssl", packages=PACKAGES)
    checked.directories(
        f"Directories {GATEWAY_DIR}, {layout.gateway_keys_dir}, {layout.gateway_dropin_dir}",
        [
            {"path": GATEWAY_DIR, "group": GATEWAY_USER, "mode": "750"},
            {"path": layout.gateway_keys_dir, "mode": "700"},
            {"path": layout.gateway_dropin_dir},
        ],
    )
    changed = [*_certificate(settings, layout, checked), _clients(settings, layout)]
    # The config loads it: in place before the candidate is checked.
    changed += checked.files(
        f"Gateway Lua {layout.gateway_lua} (token counts, the log's user)",
        [{"dest": layout.gateway_lua, "group": GATEWAY_USER, "mode": "640",
          "content": GATEWAY_LUA.read_text()}],
    )  # fmt: skip
    plan = checked.applied
    checked.files(
        "Gateway config (candidate)",
        [
            {"dest": layout.gateway_candidate, "group": GATEWAY_USER, "mode": "640",
             "content": render("gateway/haproxy.cfg.j2", gateway.context(settings, plan))},
        ],
    )  # fmt: skip
    config = ops.checked_config(
        name="Gateway config: checked with haproxy -c, then live",
        candidate=layout.gateway_candidate,
        live=layout.gateway_config,
        group=GATEWAY_USER,
    )
    dropin = _dropin(settings, layout, checked)
    # The master's own word that the new workers run, and the config's ports listening: a
    # reload that HAProxy could not take (a port held) is rolled back, not reported a success.
    took = {"master": GATEWAY_MASTER, "config": layout.gateway_config}
    services.activated(
        name=f"Start or reload {GATEWAY_UNIT}, verified live",
        unit=GATEWAY_UNIT,
        restarted=dropin,
        reloaded=[config, *changed],
        sources=[layout.api_key_env, layout.gateway_dropin],
        live=remote.check(agent, "haproxy_took", json.dumps(took), python=settings.python),
        good_dir=layout.good_config_dir("gateway"),
        config_files=[layout.gateway_config, layout.gateway_dropin, layout.gateway_lua],
    )


def _dropin(settings: Settings, layout: Layout, checked: Checked) -> list[OperationMeta]:
    """haproxy.service's drop-in: our config, the services' key, the unprivileged user."""
    text = render(
        "gateway/haproxy.dropin.conf.j2",
        {
            "config": layout.gateway_config,
            "api_key_env": layout.api_key_env,
            "run_as": GATEWAY_USER,
            "runtime": GATEWAY_RUNTIME,
            "master": GATEWAY_MASTER,
            "services": [svc.served_model_name for svc in settings.services],
        },
    )
    return checked.files(
        f"Drop-in {layout.gateway_dropin}",
        [{"dest": layout.gateway_dropin, "content": text}],
    )


def _certificate(settings: Settings, layout: Layout, checked: Checked) -> list[OperationMeta]:
    """The controller's certificate and key, or a self-signed pair made on the host once."""
    if settings.tls_cert_file and settings.tls_key_file:
        cert = Path(settings.tls_cert_file).read_text()
        key = Path(settings.tls_key_file).read_text()
        return checked.files(
            "Gateway certificate (public); certificate and key (0600)",
            [
                {"dest": layout.gateway_cert, "content": cert},
                {"dest": layout.gateway_pem, "content": cert.rstrip("\n") + "\n" + key,
                 "user": GATEWAY_USER, "group": GATEWAY_USER, "mode": "600"},
            ],
        )  # fmt: skip
    if not settings.gateway_tls:
        return []
    return [
        ops.self_signed(
            name="Gateway certificate (self-signed, made once)",
            pem=layout.gateway_pem,
            cert=layout.gateway_cert,
            owner=GATEWAY_USER,
            names=tls_names(settings),
        )
    ]


def tls_names(settings: Settings) -> list[str]:
    """What a self-signed certificate is for: the names given, else the host's own name and the
    address the inventory reaches it at; and localhost, for clients through an SSH tunnel."""
    names = list(settings.tls_names)
    if not names:
        reached_at = host.data.get("ssh_hostname")
        names = [fact(Hostname), *([reached_at] if reached_at else [])]
    return list(dict.fromkeys([*names, "localhost", "127.0.0.1"]))


def _clients(settings: Settings, layout: Layout) -> OperationMeta:
    clients = settings.clients
    given = {
        name: gateway.key_hash(read_secret(c.key_file)) for name, c in clients.items() if c.key_file
    }
    return ops.client_keys(
        name=f"Gateway client keys: {', '.join(sorted(settings.gateway_clients)) or 'none'}",
        keys_dir=layout.gateway_keys_dir,
        map_path=layout.gateway_clients_map,
        owner=GATEWAY_USER,
        given=given,
        generate=sorted(name for name, c in clients.items() if not c.key_file),
    )
