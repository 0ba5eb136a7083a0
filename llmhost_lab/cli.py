"""``llmhost lab``: the local lab host's guests (systemd-nspawn), from the command line."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from types import ModuleType

from llmhost.cli.common import Exit


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from llmhost_lab import lab

    try:
        return run(lab, args)
    except lab.LabError as e:
        print(f"llmhost: {e}", file=sys.stderr)
        return Exit.ERROR


def run(lab: ModuleType, args: argparse.Namespace) -> int:
    if args.action == "up":
        guest = lab.up(args.name, model_store=args.model_store, mirror=args.mirror)
        print(f"ssh: {' '.join(lab.ssh_command(guest))}")
    elif args.action == "down":
        lab.down(args.name)
    elif args.action == "reboot":
        lab.reboot(args.name)
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
    elif args.action == "forward":
        return _lab_forward(lab, args)
    return Exit.OK


def _lab_forward(lab: ModuleType, args: argparse.Namespace) -> int:
    """Print how to reach the guest's gateway, then hold an SSH tunnel to it open."""
    guest = lab.find(args.name)
    if guest is None or not lab.is_running(guest):
        print(f"llmhost: no lab guest {args.name!r} is up; run `llmhost lab up`", file=sys.stderr)
        return Exit.ERROR
    info = lab.forward_info(guest, args.port)
    cert = subprocess.run(
        lab.ssh_command(guest, "cat", info["remote_cert"]), capture_output=True, text=True
    )
    if cert.returncode != 0:
        print(f"llmhost: no gateway on {args.name!r} yet; run the deploy", file=sys.stderr)
        return Exit.ERROR
    with open(info["cert"], "w", encoding="utf-8") as f:
        f.write(cert.stdout)
    print(
        f"base URL:    {info['base_url']}  (or {info['direct_url']} from this machine)\n"
        f"certificate: {info['cert']}  (self-signed: trust it, e.g. SSL_CERT_FILE=...)\n"
        f"client key:  $({info['key_command']})\n"
        "forwarding until Ctrl-C ...",
        flush=True,
    )
    cmd = lab.forward_command(guest, args.port, int(info["gateway_port"]))
    os.execvp(cmd[0], cmd)


def parser() -> argparse.ArgumentParser:
    lab_p = argparse.ArgumentParser(prog="llmhost lab", description=__doc__)
    actions = lab_p.add_subparsers(dest="action", required=True)
    for action, help_ in [
        ("up", "create and boot a guest (idempotent); prints its ssh command"),
        ("down", "stop a guest and remove every trace of it"),
        ("reboot", "power a guest off cleanly and boot it again, its state kept"),
        ("status", "list the guests"),
        ("ssh", "run a command in a guest, or a shell: lab ssh [--name NAME] [-- COMMAND...]"),
        ("forward", "print how to reach a guest's gateway and tunnel localhost:PORT to it"),
    ]:
        action_p = actions.add_parser(action, help=help_)
        if action != "status":
            action_p.add_argument("--name", default="default", help="guest name (default: default)")
    actions.choices["up"].add_argument(
        "--model-store",
        help="host directory bound at the guest's model dir (survives `lab down`)",
    )
    actions.choices["up"].add_argument(
        "--mirror",
        action="store_true",
        help="also run the lab's hub mirror (Olah) with the lab's models, for `source: hub` "
        "(`--group-data group_data/hub`); it stops with the last guest that asked for it",
    )
    actions.choices["ssh"].add_argument("command", nargs="*", help="the command to run")
    actions.choices["forward"].add_argument(
        "--port", type=int, default=8443, help="local port to forward (default: 8443)"
    )
    return lab_p
