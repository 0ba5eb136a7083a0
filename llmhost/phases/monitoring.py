"""Monitoring: Prometheus and node exporter from Debian's packages, a GPU exporter of ours on
GPU hosts, scrape config and alert rules from the applied plan; or, with
``llmhost_monitoring = "export"``, only the scrape config and rules for the user's Prometheus.

Install, then configure, then activate (one place decides restart or reload): each config is
checked by promtool before it replaces the running one, and a config change is a reload.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, files, systemd

from llmhost import alerts, gpu_exporter, scrape, units
from llmhost.applied_plan import AppliedPlan
from llmhost.layout import GPU_EXPORTER_UNIT, NODE_EXPORTER_UNIT, PROMETHEUS_UNIT, Layout
from llmhost.operations.checked_files import checked_file
from llmhost.phases.preflight import Preflight
from llmhost.remote import source
from llmhost.settings import Settings

PACKAGES = ["prometheus", "prometheus-node-exporter"]
PROMTOOL = "/usr/bin/promtool"
DEFAULTS_HEADER = "# Managed by llmhost (pyinfra); edits are overwritten on the next deploy.\n"


@deploy("Monitoring: Prometheus, exporters, alert rules")
def install_monitoring(
    settings: Settings, checked: Preflight, extra_targets: Sequence[scrape.Target] = ()
) -> None:
    """``extra_targets``: more to scrape, e.g. ``scrape.gateway_target(...)`` (the gateway)."""
    if settings.monitoring is False:
        return
    layout = Layout(settings)
    plan = AppliedPlan.of(settings, checked.plan, checked.gpu_total_bytes)
    found = scrape.targets(settings, plan, host.name, extra_targets)
    rules = alerts.rules_file(settings, plan, found)
    if settings.monitoring == "export":
        _export(layout, found, rules)
        return
    node_flags, prometheus_flags = _install(settings, layout)
    systemd.service(
        name=f"Run {NODE_EXPORTER_UNIT}",
        service=NODE_EXPORTER_UNIT,
        running=True,
        enabled=True,
        restarted=node_flags.will_change,
    )
    if plan.gpu:
        _gpu_exporter(settings, layout)
    _prometheus(settings, layout, found, rules, restart=prometheus_flags.will_change)


def _defaults(path: str, args: list[str]) -> OperationMeta:
    """Debian's units take their flags from ``ARGS=`` in /etc/default/<name>."""
    return files.put(
        name=f"Flags in {path}",
        src=StringIO(f"{DEFAULTS_HEADER}ARGS={shlex.quote(shlex.join(args))}\n"),
        dest=path,
        mode="644",
    )


def _install(settings: Settings, layout: Layout) -> tuple[OperationMeta, OperationMeta]:
    """The packages, their flags written first: the postinst starts both services, and so on
    loopback from the start (apt keeps our files: --force-confold)."""
    node_flags = _defaults(
        layout.node_exporter_defaults,
        [f"--web.listen-address={layout.monitoring_address(settings.node_exporter_port)}"],
    )
    prometheus_flags = _defaults(
        layout.prometheus_defaults,
        [f"--web.listen-address={layout.monitoring_address(settings.prometheus_port)}"],
    )
    apt.packages(
        name="Install Prometheus and node exporter (Debian's packages)",
        packages=PACKAGES,
        no_recommends=True,
        update=True,
        cache_time=24 * 3600,
    )
    return node_flags, prometheus_flags


def _gpu_exporter(settings: Settings, layout: Layout) -> None:
    address = layout.monitoring_address(settings.gpu_exporter_port)
    script = files.put(
        name="GPU exporter script",
        src=StringIO(source(gpu_exporter)),
        dest=layout.gpu_exporter_script,
        mode="644",
        create_remote_dir=True,
    )
    argv = [
        f"{layout.release}/bin/python",
        layout.gpu_exporter_script,
        "--bind",
        settings.monitoring_bind_host,
        "--port",
        str(settings.gpu_exporter_port),
    ]
    unit = files.template(
        name=f"Unit {GPU_EXPORTER_UNIT}",
        src=units.template("gpu-exporter.service.j2"),
        dest=layout.gpu_exporter_unit_path,
        mode="644",
        exec_start=shlex.join(argv),
        address=address,
    )
    systemd.service(
        name=f"Run {GPU_EXPORTER_UNIT}",
        service=GPU_EXPORTER_UNIT,
        running=True,
        enabled=True,
        daemon_reload=unit.will_change,
        restarted=unit.will_change or script.will_change,
    )


def _prometheus(
    settings: Settings,
    layout: Layout,
    found: Sequence[scrape.Target],
    rules: str,
    restart: bool,
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
    systemd.service(
        name=f"Run {PROMETHEUS_UNIT}",
        service=PROMETHEUS_UNIT,
        running=True,
        enabled=True,
        restarted=restart,
        # A new config or rules: reload (SIGHUP), not restart; the TSDB and alerts stay.
        reloaded=not restart and (rules_op.will_change or config_op.will_change),
    )


def _export(layout: Layout, found: Sequence[scrape.Target], rules: str) -> None:
    files.directory(
        name=f"Directory {layout.export_dir}", path=layout.export_dir, mode="755", present=True
    )
    files.put(
        name=f"Scrape config for your Prometheus: {layout.export_scrape_config}",
        src=StringIO(scrape.export_config(found)),
        dest=layout.export_scrape_config,
        mode="644",
    )
    files.put(
        name=f"Alert rules for your Prometheus: {layout.export_rules}",
        src=StringIO(rules),
        dest=layout.export_rules,
        mode="644",
    )
