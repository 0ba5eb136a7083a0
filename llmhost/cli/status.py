"""``llmhost status [INVENTORY] [--limit HOST] [--watch] [--json]``: one screen per host.

Each host is read over the inventory's own SSH connection data (or locally for ``@local``):
``llmhost.remote.status_probe`` runs there with ``python3 -c`` and asks Prometheus on the host's
loopback, or reads the services' ``/metrics`` and nvidia-smi when monitoring is off.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from enum import IntEnum
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from llmhost.applied_plan import AppliedPlan, AppliedPlanError
from llmhost.facts.nvidia import NvidiaComputeApps, NvidiaGpus
from llmhost.layout import Layout
from llmhost.observe import status
from llmhost.remote import run as remote
from llmhost.remote import status_probe
from llmhost.settings import Settings, SettingsError

DEFAULT_INVENTORY = "inventories/prod.py"


class Exit(IntEnum):
    OK = 0
    # A host did not answer, or its probe failed.
    UNREACHABLE = 1
    USAGE = 2
    # A service not active, a target down or an alert firing.
    DEGRADED = 3


class BadInput(ValueError):
    """Arguments or an inventory the command cannot start from."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inventory", nargs="?", default=DEFAULT_INVENTORY, help="pyinfra inventory file"
    )
    parser.add_argument(
        "--limit", action="append", default=[], help="host name or glob, or a group (repeatable)"
    )
    parser.add_argument(
        "--watch", nargs="?", const=5.0, type=float, metavar="SECONDS", help="redraw every 5 s"
    )
    parser.add_argument("--json", action="store_true", help="print the hosts' status as JSON")
    parser.add_argument("--project-dir", default=".", type=Path, help="holds group_data/")


def _hosts(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    if not Path(args.inventory).is_file():
        raise BadInput(f"{args.inventory}: no such inventory file")
    # pyinfra_cli monkey-patches the process with gevent on import: only import it when needed.
    from pyinfra.api import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory

    with ctx_state.use(State()):
        try:
            inventory = make_inventory(args.inventory, cwd=str(args.project_dir.resolve()))
        except SystemExit as e:  # an inventory that refuses on purpose (no lab guest up)
            raise BadInput(str(e.code)) from None
        hosts = [(host.name, host.data.dict(), list(host.groups)) for host in inventory]
    chosen = [
        (name, data)
        for name, data, groups in hosts
        if not args.limit or any(fnmatch(name, p) or p in groups for p in args.limit)
    ]
    if not chosen:
        names = ", ".join(name for name, _, _ in hosts)
        raise BadInput(f"--limit {' '.join(args.limit)}: no host matches (hosts: {names})")
    return chosen


def ssh_argv(name: str, data: dict[str, Any], command: list[str]) -> list[str]:
    """``command`` run on the host as pyinfra would reach it (its ssh_* data)."""
    if data.get("ssh_hostname") == "@local" or name == "@local":
        return command
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
    if str(data.get("ssh_strict_host_key_checking", "")).lower() in ("no", "off", "false"):
        argv += ["-o", "StrictHostKeyChecking=no"]
    if data.get("ssh_known_hosts_file"):
        argv += ["-o", f"UserKnownHostsFile={data['ssh_known_hosts_file']}"]
    if data.get("ssh_key"):
        argv += ["-i", os.path.expanduser(str(data["ssh_key"]))]
    if data.get("ssh_port"):
        argv += ["-p", str(data["ssh_port"])]
    user = f"{data['ssh_user']}@" if data.get("ssh_user") else ""
    # ssh joins its arguments into one shell line: quote each.
    return [*argv, f"{user}{data.get('ssh_hostname') or name}", shlex.join(command)]


def probe_args(name: str, settings: Settings) -> dict[str, Any]:
    layout = Layout(settings)
    args: dict[str, Any] = {
        "plan": layout.plan,
        "units": {svc.name: layout.unit_name(svc) for svc in settings.services},
    }
    if settings.monitoring is True:
        args["prometheus"] = layout.prometheus_url
        args["queries"] = status.queries(name)
    else:
        args["metrics"] = {svc.name: layout.url(svc, "/metrics") for svc in settings.services}
        if settings.gpu:
            args["smi"] = {"gpus": NvidiaGpus().command().split(), "apps": []}
            args["smi"]["apps"] = NvidiaComputeApps().command().split()
    return args


def read_host(name: str, data: dict[str, Any]) -> status.HostStatus:
    try:
        settings = Settings.from_host_data(data, where=name)
    except SettingsError as e:
        return status.HostStatus(name, "-", error=str(e))
    command = remote.argv(status_probe, json.dumps(probe_args(name, settings)))
    result = subprocess.run(ssh_argv(name, data, command), capture_output=True, text=True)
    if result.returncode != 0:
        why = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
        return status.HostStatus(name, "-", error=f"could not read the host: {why[0]}")
    probe = json.loads(result.stdout)
    if probe["plan"] is None:
        return status.HostStatus(name, "-", error=f"no {Layout(settings).plan}: deploy first")
    try:
        plan = AppliedPlan.from_json(probe["plan"], f"{name}: {Layout(settings).plan}")
    except AppliedPlanError as e:
        return status.HostStatus(name, "-", error=str(e))
    if "queries" in probe:
        return status.from_prometheus(name, plan, probe)
    return status.from_metrics(name, plan, probe)


def _code(found: list[status.HostStatus]) -> Exit:
    if any(s.error for s in found):
        return Exit.UNREACHABLE
    return Exit.OK if all(s.healthy for s in found) else Exit.DEGRADED


def _show(found: list[status.HostStatus], as_json: bool, code: Exit) -> None:
    if as_json:
        doc = {"exit_code": int(code), "hosts": {s.host: s.to_dict() for s in found}}
        print(json.dumps(doc, indent=2))
    else:
        print("\n\n".join(status.render(s) for s in found))


def run(args: argparse.Namespace) -> int:
    try:
        hosts = _hosts(args)
    except BadInput as e:
        print(f"llmhost status: {e}", file=sys.stderr)
        return Exit.USAGE
    while True:
        found = [read_host(name, data) for name, data in hosts]
        code = _code(found)
        if args.watch and not args.json:
            print("\033[H\033[2J", end="")  # clear the screen, as watch(1) does
            print(time.strftime("%Y-%m-%d %H:%M:%S"), f"(every {args.watch:g} s, Ctrl-C ends)")
        _show(found, args.json, code)
        if not args.watch:
            return code
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return code
