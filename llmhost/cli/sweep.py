"""``llmhost bench --service NAME --sweep max_num_seqs=A,B [--sweep max_num_batched_tokens=X,Y]``:
try one service's batching on its host, config by config, and say which served best.

Each config is deployed by the README's deploy (``pyinfra INVENTORY deploy.py --limit HOST``)
with the config in ``llmhost_service_overrides``, so the service's unit goes through the
deploy's health-gated switch (rolled back if it cannot serve) and no other unit restarts: the
other services are loaded all through the switch, their main processes compared around it.
Then the service and the others are loaded together for ``--duration`` seconds. At the end,
also on Ctrl-C or SIGTERM, the host gets its deployed settings back (the deploy with the data
alone). ``llmhost.bench.sweep`` holds the rules; this module does the host's side.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from llmhost.applied_plan import AppliedPlan, AppliedPlanError
from llmhost.bench import show
from llmhost.bench import sweep as rules
from llmhost.bench.cases import ALONE, CO_LOADED, DIRECT, HELD, Case, driver_spec
from llmhost.bench.host import BenchFailed, Driver, drive, main_pids, read_host, release_python
from llmhost.bench.results import metrics
from llmhost.cli.common import Exit
from llmhost.layout import Layout
from llmhost.observe.reach import Reach, reach
from llmhost.settings import OVERRIDES_KEY, Settings

# The deploy's lines worth showing when a config did not switch: llmhost's own, then its end.
SAYS = "llmhost"
SHOWN_LINES = 12


@dataclass(frozen=True)
class Sweep:
    """What every config of one sweep shares: the command's arguments, the host, the service."""

    args: argparse.Namespace
    where: Reach
    settings: Settings
    host: str
    service: str


class Aborted(RuntimeError):
    """The sweep cannot go on safely; the message says why."""


def _deploy_argv(
    args: argparse.Namespace, host: str, overrides: dict[str, Any] | None
) -> list[str]:
    """The README's deploy of ``host`` with the bench's ``--data`` (and ``overrides`` as
    ``llmhost_service_overrides``), run by this python's pyinfra."""
    data = [a for item in args.data for a in ("--data", item)]
    if overrides is not None:
        data += ["--data", f"{OVERRIDES_KEY}={json.dumps(overrides)}"]
    return [sys.executable, "-m", "pyinfra", "-y", str(args.inventory), "deploy.py",
            "--limit", host, *data]  # fmt: skip


def _deploy(args: argparse.Namespace, host: str, overrides: dict[str, Any] | None) -> str | None:
    """Run ``_deploy_argv``; None when it converged, else its last telling lines."""
    argv = _deploy_argv(args, host, overrides)
    result = subprocess.run(argv, cwd=args.project_dir, capture_output=True, text=True)
    if result.returncode == 0:
        return None
    lines = (result.stdout + result.stderr).splitlines()
    ours = [line.strip() for line in lines if SAYS in line]
    return " | ".join((ours or lines)[-SHOWN_LINES:])


class Stopped(SystemExit):
    """Ctrl-C or SIGTERM during a sweep. A SystemExit: pyinfra's CLI patches the process with
    gevent, whose hub hands one to the main greenlet without printing it as a crash."""


@contextmanager
def _stoppable() -> Iterator[None]:
    """SIGINT and SIGTERM raise Stopped while the sweep runs: the host gets its settings back."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Stopped(f"interrupted by {signal.Signals(signum).name}")

    before = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _say(text: str) -> None:
    print(f"llmhost bench --sweep: {text}", file=sys.stderr, flush=True)


def _python(where: Reach, settings: Settings) -> str:
    return release_python(where, Layout(settings).unit_name(settings.instances[0]))


def _switch(
    sw: Sweep, config: rules.Config, changed: dict[str, Any]
) -> tuple[str | None, dict[str, Any]]:
    """Deploy ``changed`` while the other services are loaded: the deploy's failure (None: it
    switched) and the driver's answer for the others' load."""
    args, where, settings, host, service = sw.args, sw.where, sw.settings, sw.host, sw.service
    others = [svc.name for svc in settings.services if svc.name != service]
    if not others:
        _say(f"{service} {config}: deploying")
        return _deploy(args, host, changed), {"cases": []}
    background = [Case(HELD, DIRECT, tuple(others))]
    held = Driver(
        where,
        _python(where, settings),
        driver_spec(settings, others, args.duration, None, background),
    )
    try:
        held.loading()
        _say(f"{service} {config}: deploying ({', '.join(others)} under load)")
        failed = _deploy(args, host, changed)
        return failed, held.answer()
    except BaseException:
        held.stop()
        raise


def _try(sw: Sweep, config: rules.Config, changed: dict[str, Any]) -> rules.Tried:
    """Switch the service to ``config`` under the others' load, then load them all together."""
    args, where, settings, service = sw.args, sw.where, sw.settings, sw.service
    layout = Layout(settings)
    names = [svc.name for svc in settings.services]
    others = [layout.unit_name(u) for u in settings.instances if u.service_name != service]
    tried = rules.Tried(config, config == rules.deployed(settings.service(service)), False)
    before = main_pids(where, others) if others else {}
    failed, answer = _switch(sw, config, changed)
    for case in answer["cases"]:
        for name, raw in case["services"].items():
            tried.during_switch[name] = metrics(raw, settings.service(name).slo)
    after = main_pids(where, others) if others else {}
    moved = [u for u in others if before[u] != after[u]]
    if moved:
        raise Aborted(
            f"the deploy of {config} restarted {', '.join(moved)} too: the host does not run "
            "what its data says; deploy it, then sweep"
        )
    if failed:
        tried.error = failed
        _say(f"{service} {config}: the deploy did not switch to it: {failed}")
        return tried
    tried.switched = True
    # The release venv, again: the deploy may have made a new release.
    python = _python(where, settings)
    load = CO_LOADED if len(names) > 1 else ALONE
    spec = driver_spec(settings, names, args.duration, None, [Case(load, DIRECT, tuple(names))])
    for case in drive(where, python, spec)["cases"]:
        for name, raw in case["services"].items():
            tried.measured[name] = metrics(raw, settings.service(name).slo)
    return tried


def run(
    args: argparse.Namespace, host: str, data: dict[str, Any], settings: Settings, service: str
) -> int:
    where = reach(host, data)
    layout = Layout(settings)
    svc = settings.service(service)
    try:
        wanted = rules.parse(args.sweep)
        text = read_host(where, ["cat", layout.plan])
        plan = AppliedPlan.from_json(text, f"{host}: {layout.plan}")
        tried = rules.configs(svc, wanted)
        rules.check(data, host, service, tried, rules.workload_cap(plan, svc))
        pins = rules.fraction_pins(plan, settings)
    except (rules.SweepError, AppliedPlanError) as e:
        print(f"llmhost bench: {e}", file=sys.stderr)
        return Exit.USAGE
    except BenchFailed as e:
        print(f"llmhost bench: {host}: {e}", file=sys.stderr)
        return Exit.UNREACHABLE
    results: list[rules.Tried] = []
    # The host runs the deployed settings when the last deploy was of them, pins aside.
    restored = False
    sw = Sweep(args, where, settings, host, service)
    try:
        with _stoppable():
            for i, config in enumerate(tried, 1):
                _say(f"config {i}/{len(tried)}")
                changed = rules.overrides(data, service, config, pins)
                restored = False
                last = _try(sw, config, changed)
                results.append(last)
                restored = last.deployed and last.switched and not pins
    except (Aborted, BenchFailed, Stopped) as e:
        _say(f"stopped: {e}")
    finally:
        restored = restored or _restore(args, host, service)
    winner = rules.best(results, service)
    line = rules.override_line(data, service, winner.config) if winner else None
    print(show.sweep_table(host, service, args.duration, results, winner, line))
    doc = {"host": host, "service": service, "duration_s": args.duration}
    doc |= rules.to_dict(results, winner, line)
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.plot:
        show.sweep_plot(host, service, results, settings.service(service).slo, args.plot)
        print(f"wrote {args.plot}")
    complete = len(results) == len(tried) and all(t.switched for t in results)
    return Exit.OK if complete and restored else Exit.DEGRADED


def _restore(args: argparse.Namespace, host: str, service: str) -> bool:
    """The deploy with the host's data alone: its deployed settings back (False: it failed,
    and we said what to run)."""
    _say(f"putting {service}'s deployed settings back (the deploy with the host's data)")
    try:
        with _stoppable():
            failed = _deploy(args, host, None)
    except Stopped as e:
        failed = str(e)
    if failed:
        command = shlex.join(["pyinfra", *_deploy_argv(args, host, None)[3:]])
        _say(f"the deploy that puts them back failed ({failed}); run it: {command}")
    return not failed
