"""The ``llmhost`` command: the VRAM plan, each host's status, its load bench, and the lab host
(``llmhost_lab``, imported only by ``llmhost lab``)."""

from __future__ import annotations

import argparse
import sys


def parser() -> argparse.ArgumentParser:
    from llmhost.cli import bench as bench_cli
    from llmhost.cli import plan as plan_cli
    from llmhost.cli import status as status_cli

    top = argparse.ArgumentParser(prog="llmhost", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    # Listed for --help; main() hands `llmhost lab ...` to the lab's own parser.
    sub.add_parser("lab", help="the local lab host's guests: `llmhost lab --help`")
    plan_p = sub.add_parser("plan", help="VRAM plan per host, or a what-if for a stack")
    plan_cli.add_arguments(plan_p)
    plan_p.set_defaults(func=plan_cli.run)
    status_p = sub.add_parser("status", help="each host's services, GPU and alerts, at a glance")
    status_cli.add_arguments(status_p)
    status_p.set_defaults(func=status_cli.run)
    bench_p = sub.add_parser("bench", help="load a host's services against their latency targets")
    bench_cli.add_arguments(bench_p)
    bench_p.set_defaults(func=bench_cli.run)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["lab"]:
        # The lab ships beside the product, which imports it only here.
        from llmhost_lab import cli as lab_cli

        return lab_cli.main(argv[1:])
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
