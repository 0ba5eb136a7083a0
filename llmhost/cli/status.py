"""``llmhost status [INVENTORY] [--limit HOST] [--watch] [--json]``: one screen per host.

Each host is read over the inventory's own SSH connection data (or locally for ``@local``):
``llmhost.remote.agent`` runs there with ``python3 -c`` and asks Prometheus on the host's
loopback, or reads the services' ``/metrics`` and nvidia-smi when monitoring is off.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from llmhost.applied_plan import AppliedPlan, AppliedPlanError
from llmhost.cli.common import BadInput, Exit, inventory_hosts
from llmhost.facts.nvidia import NvidiaComputeApps, NvidiaGpus
from llmhost.layout import Layout
from llmhost.observe import status
from llmhost.observe.reach import reach
from llmhost.remote import agent
from llmhost.remote import run as remote
from llmhost.settings import Settings, SettingsError

DEFAULT_INVENTORY = "inventories/prod.py"


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


def probe_args(name: str, settings: Settings) -> dict[str, Any]:
    layout = Layout(settings)
    args: dict[str, Any] = {
        "plan": layout.plan,
        "units": {svc.name: layout.unit_name(svc) for svc in settings.instances},
    }
    if settings.monitoring is True:
        args["prometheus"] = layout.prometheus_url
        args["queries"] = status.queries(name)
    else:
        args["metrics"] = {svc.name: layout.url(svc, "/metrics") for svc in settings.instances}
        if settings.gpu:
            args["smi"] = {"gpus": NvidiaGpus().command().split(), "apps": []}
            args["smi"]["apps"] = NvidiaComputeApps().command().split()
    return args


def read_host(name: str, data: dict[str, Any]) -> status.HostStatus:
    try:
        settings = Settings.from_host_data(data, where=name)
    except SettingsError as e:
        return status.HostStatus(name, "-", error=str(e))
    command = remote.argv(agent, "status", json.dumps(probe_args(name, settings)))
    result = subprocess.run(reach(name, data).ssh_argv(command), capture_output=True, text=True)
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
        hosts = inventory_hosts(args.inventory, args.project_dir, limit=args.limit)
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
