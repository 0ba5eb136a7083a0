"""Monitoring: Prometheus and node exporter from Debian's packages, a GPU exporter of ours on
GPU hosts, scrape config and alert rules from the applied plan; or, with
``llmhost_monitoring = "export"``, only the scrape config and rules for the user's Prometheus.

Install, then configure, then activate (one place decides restart or reload): each config is
checked by promtool before it replaces the running one, and a config change is a reload.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from urllib.parse import urlsplit

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt

from llmhost.checked import Checked
from llmhost.layout import GPU_EXPORTER_UNIT, NODE_EXPORTER_UNIT, PROMETHEUS_UNIT, Layout
from llmhost.monitoring import alerts, gpu_exporter, scrape
from llmhost.monitoring.checked_files import checked_file
from llmhost.operations import services
from llmhost.remote import agent
from llmhost.remote import run as remote
from llmhost.render import render
from llmhost.settings import Settings

PACKAGES = ["prometheus", "prometheus-node-exporter"]
PROMTOOL = "/usr/bin/promtool"
DEFAULTS_HEADER = "# Managed by llmhost (pyinfra); edits are overwritten on the next deploy.\n"


@deploy("Monitoring: Prometheus, exporters, alert rules")
def install_monitoring(
    settings: Settings, checked: Checked, extra_targets: Sequence[scrape.Target] = ()
) -> None:
    """``extra_targets``: more to scrape, e.g. ``scrape.gateway_targets(...)`` (the gateway)."""
    if settings.monitoring is False:
        return
    layout = Layout(settings)
    plan = checked.applied
    found = scrape.targets(settings, plan, host.name, extra_targets)
    rules = alerts.rules_file(settings, plan, found)
    if settings.monitoring == "export":
        _export(layout, checked, found, rules)
        return
    node_flags, prometheus_flags = _install(settings, layout, checked)
    services.activated(
        name=f"Run {NODE_EXPORTER_UNIT}, verified live",
        unit=NODE_EXPORTER_UNIT,
        restarted=node_flags,
        reloaded=False,
        sources=[layout.node_exporter_defaults],
        **_listens(settings, layout, NODE_EXPORTER_UNIT, settings.node_exporter_port),
        config_files=[layout.node_exporter_defaults],
    )
    if plan.gpu:
        _gpu_exporter(settings, layout, checked)
    _prometheus(settings, layout, found, rules, flags=prometheus_flags)


def _defaults(checked: Checked, path: str, args: list[str]) -> list[OperationMeta]:
    """Debian's units take their flags from ``ARGS=`` in /etc/default/<name>."""
    content = f"{DEFAULTS_HEADER}ARGS={shlex.quote(shlex.join(args))}\n"
    return checked.files(f"Flags in {path}", [{"dest": path, "content": content}])


def _install(
    settings: Settings, layout: Layout, checked: Checked
) -> tuple[list[OperationMeta], list[OperationMeta]]:
    """The packages, their flags written first: the postinst starts both services, and so on
    loopback from the start (apt keeps our files: --force-confold)."""
    node_flags = _defaults(
        checked,
        layout.node_exporter_defaults,
        [f"--web.listen-address={layout.monitoring_address(settings.node_exporter_port)}"],
    )
    prometheus_flags = _defaults(
        checked,
        layout.prometheus_defaults,
        [f"--web.listen-address={layout.monitoring_address(settings.prometheus_port)}"],
    )
    if not checked.installed(PACKAGES):
        apt.packages(
            name="Install Prometheus and node exporter (Debian's packages)",
            packages=PACKAGES,
            no_recommends=True,
            update=True,
            cache_time=24 * 3600,
        )
    return node_flags, prometheus_flags


def _gpu_exporter(settings: Settings, layout: Layout, checked: Checked) -> None:
    address = layout.monitoring_address(settings.gpu_exporter_port)
    checked.directories("Directory of the GPU exporter", [{"path": layout.gpu_exporter_dir}])
    script = checked.files(
        "GPU exporter script",
        [{"dest": layout.gpu_exporter_script, "content": remote.source(gpu_exporter)}],
    )
    argv = [
        f"{layout.release}/bin/python",
        layout.gpu_exporter_script,
        "--bind",
        settings.monitoring_bind_host,
        "--port",
        str(settings.gpu_exporter_port),
    ]
    unit_text = render(
        "monitoring/gpu-exporter.service.j2", {"exec_start": shlex.join(argv), "address": address}
    )
    unit = checked.files(
        f"Unit {GPU_EXPORTER_UNIT}",
        [{"dest": layout.gpu_exporter_unit_path, "content": unit_text}],
    )
    services.activated(
        name=f"Run {GPU_EXPORTER_UNIT}, verified live",
        unit=GPU_EXPORTER_UNIT,
        restarted=[*unit, *script],
        reloaded=False,
        sources=[layout.gpu_exporter_unit_path, layout.gpu_exporter_script],
        **_listens(settings, layout, GPU_EXPORTER_UNIT, settings.gpu_exporter_port),
        config_files=[layout.gpu_exporter_unit_path, layout.gpu_exporter_script],
    )


def _listens(settings: Settings, layout: Layout, unit: str, port: int) -> dict[str, str]:
    """An exporter's restart verified: the unit's own process listens where planned (a unit
    in a restart loop, or a port taken meanwhile, is rolled back to the last good files)."""
    where = {"unit": unit, "address": settings.monitoring_bind_host, "port": port}
    return {
        "live": remote.check(agent, "unit_listens", json.dumps(where), python=settings.python),
        "good_dir": layout.good_config_dir(unit.removesuffix(".service")),
    }


def _prometheus(
    settings: Settings,
    layout: Layout,
    found: Sequence[scrape.Target],
    rules: str,
    flags: list[OperationMeta],
) -> None:
    """Its rules and config, checked before they replace the running ones; then a reload, or
    a restart when its flags changed."""
    # Rules first: `promtool check config` also checks the rule files the config names.
    rules_op = checked_file(
        name=f"Alert rules {layout.prometheus_rules} (promtool check rules)",
        content=rules,
        dest=layout.prometheus_rules,
        check=[PROMTOOL, "check", "rules"],
    )
    config_op = checked_file(
        name=f"Prometheus config {layout.prometheus_config} (promtool check config)",
        content=scrape.prometheus_config(settings, found, layout.prometheus_rules),
        dest=layout.prometheus_config,
        check=[PROMTOOL, "check", "config"],
    )
    services.activated(
        name=f"Run {PROMETHEUS_UNIT}, verified live",
        unit=PROMETHEUS_UNIT,
        restarted=flags,
        # A new config or rules: reload (SIGHUP), not restart; the TSDB and alerts stay.
        reloaded=[rules_op, config_op],
        sources=[layout.prometheus_defaults],
        live=_loaded_since_t0(layout.prometheus_url),
        good_dir=layout.good_config_dir("prometheus"),
        config_files=[layout.prometheus_config, layout.prometheus_rules],
        # A restart replays the TSDB's write-ahead log before it answers.
        timeout_s=120,
    )


def _loaded_since_t0(prometheus: str) -> str:
    """Prometheus's own word: its last config load succeeded, at or after ``$T0`` (the reload
    or restart asked for); a SIGHUP it refused leaves the old config running and says 0."""
    host = urlsplit(prometheus).hostname or "127.0.0.1"
    metrics = shlex.quote(f"{prometheus}/metrics")
    return (
        f'curl --noproxy {shlex.quote(host)} -fsS --max-time 5 {metrics} | awk -v t0="$T0" '
        '\'$1 == "prometheus_config_last_reload_successful" { ok = $2 } '
        '$1 == "prometheus_config_last_reload_success_timestamp_seconds" { at = $2 } '
        "END { exit !(ok == 1 && at + 0 >= t0 + 0) }'"
    )


def _export(layout: Layout, checked: Checked, found: Sequence[scrape.Target], rules: str) -> None:
    checked.directories(f"Directory {layout.export_dir}", [{"path": layout.export_dir}])
    checked.files(
        f"Scrape config and alert rules for your Prometheus, in {layout.export_dir}",
        [
            {"dest": layout.export_scrape_config, "content": scrape.export_config(found)},
            {"dest": layout.export_rules, "content": rules},
        ],
    )
