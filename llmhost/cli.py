"""The ``llmhost`` command: the VRAM planner and the lab host (``llmhost_lab``, imported only by
``llmhost lab``)."""

from __future__ import annotations

import argparse
import os
import sys
from enum import IntEnum
from types import ModuleType


class Exit(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2


def _lab(args: argparse.Namespace) -> int:
    from llmhost_lab import lab

    try:
        return _lab_action(lab, args)
    except lab.LabError as e:
        print(f"llmhost: {e}", file=sys.stderr)
        return Exit.ERROR


def _lab_action(lab: ModuleType, args: argparse.Namespace) -> int:
    if args.action == "up":
        guest = lab.up(args.name, model_store=args.model_store)
        print(f"ssh: {' '.join(lab.ssh_command(guest))}")
    elif args.action == "down":
        lab.down(args.name)
    elif args.action == "status":
        rows = list(lab.status())
        if not rows:
            print("no lab guests (run `llmhost lab up`)")
        for guest, running in rows:
            state = "running" if running else "stopped"
            print(f"{guest.name}\t{guest.address}\t{state}\tpid {guest.pid}")
    elif args.action == "ssh":
        guest = lab.find(args.name)
        if guest is None or not lab.is_running(guest):
            print(
                f"llmhost: no lab guest {args.name!r} is up; run `llmhost lab up`", file=sys.stderr
            )
            return Exit.ERROR
        cmd = lab.ssh_command(guest, *args.command)
        os.execvp(cmd[0], cmd)
    return Exit.OK


def parser() -> argparse.ArgumentParser:
    from llmhost import plan_cli, status_cli

    top = argparse.ArgumentParser(prog="llmhost", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    lab_p = sub.add_parser("lab", help="the local lab host (systemd-nspawn guest)")
    actions = lab_p.add_subparsers(dest="action", required=True)
    for action, help_ in [
        ("up", "create and boot a guest (idempotent); prints its ssh command"),
        ("down", "stop a guest and remove every trace of it"),
        ("status", "list the guests"),
        ("ssh", "run a command in a guest, or a shell: lab ssh [--name NAME] [-- COMMAND...]"),
    ]:
        action_p = actions.add_parser(action, help=help_)
        if action != "status":
            action_p.add_argument("--name", default="default", help="guest name (default: default)")
        action_p.set_defaults(func=_lab)
    actions.choices["up"].add_argument(
        "--model-store",
        help="host directory bound at the guest's model dir (survives `lab down`)",
    )
    actions.choices["ssh"].add_argument("command", nargs="*", help="the command to run")
    plan_p = sub.add_parser("plan", help="VRAM plan per host, or a what-if for a stack")
    plan_cli.add_arguments(plan_p)
    plan_p.set_defaults(func=plan_cli.run)
    status_p = sub.add_parser("status", help="each host's services, GPU and alerts, at a glance")
    status_cli.add_arguments(status_p)
    status_p.set_defaults(func=status_cli.run)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
