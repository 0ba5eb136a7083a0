"""``llmhost bench [INVENTORY] [--limit HOST] [--service NAME] [--duration S] [--json FILE]
[--plot FILE.png] [--data KEY=VALUE] [--sweep KEY=V1,V2]``: load one host's services against
their latency targets; with ``--sweep``, try batching values on one (``llmhost.cli.sweep``).

Each service alone, then all of them at once, each straight to the service and through the
gateway; the load comes from vLLM's own benchmark client, run on the host by the services'
release venv (``llmhost.bench.driver``), with each service's workload and targets from its data
(``slo``, ``workload``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmhost.bench import show
from llmhost.bench.cases import NO_CLIENT, bench_client, driver_spec
from llmhost.bench.host import BenchFailed, drive, release_python
from llmhost.bench.results import Report
from llmhost.cli import sweep
from llmhost.cli.common import BadInput, Exit, cli_data, inventory_hosts
from llmhost.layout import unit_name
from llmhost.observe.reach import reach
from llmhost.settings import Settings, SettingsError

DEFAULT_INVENTORY = "inventories/prod.py"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 1 <= value <= 3600:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give the seconds per case as a number from 1 to 3600, e.g. 20"
        )
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inventory", nargs="?", default=DEFAULT_INVENTORY, help="pyinfra inventory file"
    )
    parser.add_argument("--limit", action="append", default=[], help="the host (name or glob)")
    parser.add_argument(
        "--service", action="append", default=[], help="bench only this service (repeatable)"
    )
    parser.add_argument(
        "--duration", type=_seconds, default=20.0, metavar="S", help="seconds per case (20)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the numbers as JSON")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="latency vs throughput")
    parser.add_argument(
        "--sweep",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=V1,V2",
        help="try these max_num_seqs / max_num_batched_tokens values on the one --service "
        "(restarts that service only, puts its deployed settings back at the end)",
    )
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="data the host was deployed with (pyinfra's --data, repeatable, the same values)",
    )
    parser.add_argument("--project-dir", default=".", type=Path, help="holds group_data/")


def _host(args: argparse.Namespace) -> tuple[str, dict, Settings, list[str]]:
    """The one host to load, its settings and the services to bench; BadInput otherwise."""
    hosts = inventory_hosts(args.inventory, args.project_dir, cli_data(args.data), args.limit)
    if len(hosts) != 1:
        names = ", ".join(name for name, _ in hosts)
        raise BadInput(f"bench loads one host at a time: pick it with --limit (hosts: {names})")
    name, data = hosts[0]
    try:
        settings = Settings.from_host_data(data, where=name)
    except SettingsError as e:
        raise BadInput(str(e)) from None
    known = [svc.name for svc in settings.services]
    unknown = [s for s in args.service if s not in known]
    if unknown:
        raise BadInput(f"--service {unknown[0]}: {name} has no such service (it has {known})")
    if args.sweep and len(args.service) != 1:
        raise BadInput(f"--sweep tunes one service: name it with --service (one of {known})")
    return name, data, settings, [s for s in known if not args.service or s in args.service]


def _write(report: Report, args: argparse.Namespace) -> None:
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.plot:
        show.plot(report, args.plot)
        print(f"wrote {args.plot}")


def _code(report: Report) -> Exit:
    """DEGRADED when a request failed, a service restarted or logged a memory error."""
    bad = any(m.failures or m.restarts or m.journal for *_, m in report.rows())
    return Exit.DEGRADED if bad else Exit.OK


def run(args: argparse.Namespace) -> int:
    try:
        if args.plot:
            show.require_matplotlib()
        name, data, settings, names = _host(args)
    except (BadInput, show.PlotUnavailable) as e:
        print(f"llmhost bench: {e}", file=sys.stderr)
        return Exit.USAGE
    if args.sweep:
        return sweep.run(args, name, data, settings, names[0])
    client = bench_client(settings)
    notes = [] if client or not settings.gateway else [f"note: {NO_CLIENT}"]
    spec = driver_spec(settings, names, args.duration, client)
    where = reach(name, data)
    try:
        first = settings.service(names[0]).instances()[0]
        answer = drive(where, release_python(where, unit_name(first.name)), spec)
    except BenchFailed as e:
        print(f"llmhost bench: {name}: {e}", file=sys.stderr)
        return Exit.UNREACHABLE
    slo = {n: settings.service(n).slo for n in names}
    report = Report.of(name, spec, answer, slo, notes)
    print(show.table(report))
    _write(report, args)
    return _code(report)
