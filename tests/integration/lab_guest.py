"""The integration tests' lab guest: its names and layout, the README's deploy against it,
commands on it and the product's post-deploy suite (one guest per pytest-xdist worker)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import guest_scan

from llmhost.layout import Layout
from llmhost.remote import run as remote
from llmhost.settings import group_settings
from llmhost_lab import lab

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Another name lets two integration runs share a machine; each xdist worker (gw0, gw1) has a
# guest of its own.
GUEST = os.environ.get("LLMHOST_IT_GUEST", "it") + os.environ.get("PYTEST_XDIST_WORKER", "")
HOST = f"lab-{GUEST}"
# The guest's model store, a host directory that outlives the guest like a separate disk.
MODEL_STORE = lab.STATE_DIR / "stores" / GUEST
# The guest's paths and names as the deploy lays them out from the lab's data.
LAYOUT = Layout(group_settings(ROOT, "lab"))
# The lab's services, in the order the deploy starts them.
SERVICES = tuple(svc.name for svc in LAYOUT.settings.services)


def unit(name: str) -> str:
    return LAYOUT.unit_name(LAYOUT.settings.service(name))


@dataclass(frozen=True)
class DeployRun:
    returncode: int
    output: str
    changed: int
    errors: int


def _total(output: str) -> tuple[int, int]:
    # pyinfra's results table ends with: Grand total  <ops>  <success>  <error>  <no change>
    match = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", output)
    if not match:
        return -1, -1
    count = [0 if v == "-" else int(v) for v in match.groups()[1:3]]
    return count[0], count[1]


# --data that every later deploy on this worker's guest carries (``keep_data``).
_KEPT: list[str] = []


def keep_data(*data: str) -> None:
    """Every later deploy on this worker's guest carries ``data`` (its ``--data`` arguments; a
    test's own ``--data`` for the same key wins): a drill's end state stays the guest's, instead
    of the next drill's converge undoing it at the cost of vLLM starts."""
    _KEPT[:] = data


def kept_data() -> list[str]:
    """The ``--data`` arguments every deploy on this guest carries now (``keep_data``)."""
    return list(_KEPT)


def deploy_command(*extra: str) -> list[str]:
    """The README's deploy against the test guest, as a user would run it."""
    return [str(BIN / "pyinfra"), "-y", "inventories/lab.py", "deploy.py", "--limit", HOST,
            *_KEPT, *extra]  # fmt: skip


def deploy(*extra: str) -> DeployRun:
    result = subprocess.run(
        deploy_command(*extra),
        cwd=ROOT,
        text=True,
        capture_output=True,
    )
    output = result.stdout + result.stderr
    changed, errors = _total(output)
    return DeployRun(result.returncode, output, changed, errors)


def run_on_guest(command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """A shell command on the test guest, its status and output as they came."""
    guest = lab.find(GUEST)
    assert guest is not None
    return subprocess.run(
        lab.ssh_command(guest, command), input=stdin, text=True, capture_output=True
    )


def on_guest(command: str, check: bool = True, stdin: str | None = None) -> str:
    result = run_on_guest(command, stdin)
    if check and result.returncode != 0:
        raise AssertionError(f"{command!r} on {HOST} failed: {result.stderr}")
    return result.stdout


def host_checks(*extra: str) -> subprocess.CompletedProcess[str]:
    """The product's post-deploy suite against the test guest, given the data its deploys
    carry (``keep_data``), as a user who deployed with it would."""
    return subprocess.run(
        [BIN / "pytest", "tests/host", "--inventory", "inventories/lab.py", "--limit", HOST,
         "-p", "no:cacheprovider", *_KEPT, *extra],
        cwd=ROOT,
        text=True,
        capture_output=True,
    )  # fmt: skip


def failed_checks(*select: str) -> str:
    """The report of the post-deploy checks that ``select`` names (``-k``), which must fail."""
    result = host_checks("-k", " or ".join(select))
    assert result.returncode != 0, f"the checks passed on a broken host:\n{result.stdout[-3000:]}"
    return result.stdout


# Where a deploy writes; -xdev keeps find off the lab's bind mounts, so the model store (a host
# directory bound at the model dir) is named on its own.
WATCHED = ("/etc", "/opt", "/srv", LAYOUT.settings.model_dir, LAYOUT.settings.cache_dir, "/usr")
_WATCH_MARKER = "/run/llmhost-watched-deploy.marker"


@dataclass(frozen=True)
class WatchedDeploy:
    """A deploy, the services' main PIDs around it, and every file under ``WATCHED`` it wrote."""

    run: DeployRun
    pids_before: str
    pids_after: str
    written: str


def watched_deploy(*extra: str) -> WatchedDeploy:
    """The deploy with ``extra``, watched for what it changed on the guest (a refused deploy
    must change nothing)."""
    units = " ".join(map(unit, SERVICES))
    before = on_guest(f"touch {_WATCH_MARKER} && systemctl show -p MainPID --value {units}")
    run = deploy(*extra)
    # One round trip: the services' PIDs, then every file written since the marker.
    after = on_guest(
        f"systemctl show -p MainPID --value {units} && echo -- && "
        f"find {' '.join(WATCHED)} -xdev -newer {_WATCH_MARKER} -print"
    )
    pids_after, _, written = after.partition("--\n")
    return WatchedDeploy(run, before, pids_after, written)


def refusals(output: str) -> list[str]:
    """The lines of llmhost's refusal: one per problem, each starting with the host's name."""
    _, found, rest = output.partition("llmhost: nothing was changed.\n")
    assert found, f"no llmhost error in the output:\n{output[-3000:]}"
    return [line for line in rest.splitlines() if line.startswith(f"{HOST}: ")]


def services_state() -> str:
    units = " ".join(map(unit, SERVICES))
    return on_guest(f"systemctl show -p MainPID -p ActiveEnterTimestamp -p NRestarts {units}")


def store_files(root: Path = MODEL_STORE) -> dict[str, tuple[int, int, int]]:
    """Each file under ``root``: inode, size and modification time (any rewrite changes them)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            found[str(path.relative_to(root))] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return found


@dataclass(frozen=True)
class LostGuest:
    """The guest before the tests' own: the output of its ``--debug`` deploy, cut off once the
    models were on the model store, and the store's files then."""

    output: str
    store: dict[str, tuple[int, int, int]]


@dataclass(frozen=True)
class FreshConverge:
    """The fresh guest's first deploy (``--debug``), and the second one right after it."""

    first: DeployRun
    second: DeployRun
    # The services' main PIDs, start times and restart counts around the second.
    services_before: str
    services_after: str
    # The model store's files after the first.
    store: dict[str, tuple[int, int, int]]


@contextlib.contextmanager
def link_rate(rate: str | None) -> Iterator[None]:
    """Limit what the controller sends the guest (the guest's veth, on this side) to ``rate``."""
    if rate is None:
        yield
        return
    guest = lab.find(GUEST)
    assert guest is not None
    tc = ["tc", "qdisc", "replace", "dev", guest.veth, "root", "tbf", "rate", rate]
    subprocess.run([*tc, "burst", "32kbit", "latency", "400ms"], check=True)
    try:
        yield
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", guest.veth, "root"], check=True)


# Where a secret could land on disk; each is searched without crossing into other mounts (the
# lab's model store and pip cache are controller directories bound into the guest).
SCANNED = ("/etc", "/opt", "/srv", "/var", "/home", "/root", "/tmp", "/run/systemd")


def scan_for(named: dict[str, str]) -> dict:
    """Where on the guest each secret shows up (guest_scan.py; the values go on its stdin, only
    their names come back)."""
    command = shlex.join(remote.argv(guest_scan, *SCANNED))
    return json.loads(on_guest(command, stdin=json.dumps(named)))
