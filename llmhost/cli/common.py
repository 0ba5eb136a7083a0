"""What every ``llmhost`` command shares: its exit codes, its refusal, and how it reads an
inventory's hosts (as ``pyinfra`` merges their data)."""

from __future__ import annotations

from enum import IntEnum
from fnmatch import fnmatch
from pathlib import Path
from typing import Any


class Exit(IntEnum):
    """One set of codes for every command; the second name of each is how a command reads it."""

    OK = 0
    FITS = 0
    # The lab failed; a host did not answer, or its probe failed.
    ERROR = 1
    UNREACHABLE = 1
    # Arguments, an inventory or host data the command cannot start from (argparse's 2 too).
    BAD_INPUT = 2
    USAGE = 2
    # The command's answer is "no": a plan that does not fit; a service down or an alert firing.
    DOES_NOT_FIT = 3
    DEGRADED = 3


class BadInput(ValueError):
    """Input a command cannot start from; the message says what to pass instead."""


def cli_data(items: list[str]) -> dict[str, Any]:
    """``--data KEY=VALUE`` arguments as pyinfra reads them (JSON, numbers and booleans parsed),
    for a command that must see the data the deploy was given."""
    pairs = [item.partition("=") for item in items]
    bad = [key for key, sep, _ in pairs if not sep]
    if bad:
        raise BadInput(f"--data {bad[0]}: write KEY=VALUE, as for the deploy")
    from pyinfra_cli.util import parse_cli_arg

    return {key: parse_cli_arg(value) for key, _, value in pairs}


def inventory_hosts(
    inventory: str,
    project_dir: Path,
    override: dict[str, Any] | None = None,
    limit: list[str] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """(name, data) of each host ``limit`` picks (names, globs or groups; all without it), the
    data merged the way ``pyinfra`` merges it: inventory, group_data/, then ``override``."""
    if not Path(inventory).is_file():
        raise BadInput(f"{inventory}: no such inventory file")
    # pyinfra_cli monkey-patches the process with gevent on import: only import it when needed.
    from pyinfra.api import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory

    with ctx_state.use(State()):
        try:
            hosts = make_inventory(
                inventory, override_data=override, cwd=str(project_dir.resolve())
            )
        except SystemExit as e:  # an inventory that refuses on purpose (no lab guest up)
            raise BadInput(str(e.code)) from None
        found = [(host.name, host.data.dict(), list(host.groups)) for host in hosts]
    chosen = [
        (name, data)
        for name, data, groups in found
        if not limit or any(fnmatch(name, p) or p in groups for p in limit)
    ]
    if not chosen:
        names = ", ".join(name for name, _, _ in found)
        raise BadInput(f"--limit {' '.join(limit or [])}: no host matches (hosts: {names})")
    return chosen
