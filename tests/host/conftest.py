"""Post-deploy checks of real hosts, driven by the same pyinfra inventory and data as the deploy.

    pytest tests/host --inventory inventories/lab.py [--limit HOST_OR_GROUP] [--data KEY=VALUE]

Each check runs per host (``gpu-01::driver``) or per host and service
(``gpu-01::coder::health``); ``-k coder`` or ``-m gpu`` select from them. Planned numbers come
from ``<llmhost_config_dir>/plan.json``, which the deploy writes: what was deployed is checked.
"""

from __future__ import annotations

import warnings
from fnmatch import fnmatch
from pathlib import Path

import pytest
from pyinfra.api import State
from pyinfra.api.exceptions import NoGroupError
from pyinfra.api.host import Host as PyinfraHost
from pyinfra.api.inventory import Inventory
from pyinfra.context import ctx_state
from targets import HostTarget, connect

from llmhost.cli.common import BadInput, cli_data
from llmhost.observe.checks import MIB, parse_service_pids
from llmhost.settings import Settings, SettingsError

with warnings.catch_warnings():
    # pyinfra_cli monkey-patches with gevent on import and warns about it: pyinfra's own noise.
    warnings.simplefilter("ignore")
    from pyinfra_cli.exceptions import UnexpectedExternalError
    from pyinfra_cli.inventory import make_inventory

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGETS = pytest.StashKey[list[HostTarget]]()
REPORT = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llmhost", "llmhost post-deploy checks")
    group.addoption(
        "--inventory", help="pyinfra inventory the deploy used, e.g. inventories/lab.py"
    )
    group.addoption(
        "--limit",
        action="append",
        default=[],
        help="only hosts matching this group name or host glob (repeatable), like pyinfra's",
    )
    group.addoption(
        "--data",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="data the deploy was given with pyinfra's --data (repeatable, the same values), "
        'e.g. llmhost_service_overrides=\'{"general": {"replicas": 2}}\'',
    )
    group.addoption(
        "--service-pids",
        help="drill without systemd: SERVICE=PID[,SERVICE=PID...] stand in for the services' "
        "processes (GPU checks only; e.g. processes that hold GPU memory the way the plan says)",
    )
    group.addoption(
        "--gpu-tolerance-mib",
        type=int,
        default=512,
        help="GPU memory a service or the GPU may use above its plan (default 512 MiB)",
    )
    group.addoption(
        "--request-timeout",
        type=float,
        default=60.0,
        help="seconds one chat completion may take, alone or under the load smoke (default 60)",
    )


def _load_targets(config: pytest.Config) -> list[HostTarget]:
    path = config.getoption("--inventory")
    if not path:
        raise pytest.UsageError("pass --inventory inventories/<name>.py (the deploy's inventory)")
    if not Path(path).is_file():
        raise pytest.UsageError(f"--inventory {path}: no such file")
    # pyinfra executes inventory and group_data files inside a State context.
    ctx_state.set(State())
    try:
        inventory = make_inventory(path, _data(config), cwd=str(REPO_ROOT))
    except SystemExit as e:
        # An inventory may refuse on purpose (inventories/lab.py when no guest is up).
        raise pytest.UsageError(str(e.code)) from None
    except UnexpectedExternalError as e:
        raise pytest.UsageError(
            f"{e.filename}: {type(e.exception).__name__}: {e.exception}"
        ) from None
    if not len(inventory):
        raise pytest.UsageError(
            f"{path}: no hosts in this inventory (for the lab: no lab guest, run `llmhost lab up`)"
        )
    hosts = _limit(inventory, config.getoption("--limit"), path)
    pids = config.getoption("--service-pids")
    try:
        pid_override = parse_service_pids(pids) if pids else None
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    targets = []
    for host in hosts:
        try:
            settings = Settings.from_host_data(host.data.dict(), where=f"{path}: {host.name}")
        except SettingsError as e:
            raise pytest.UsageError(str(e)) from None
        if pid_override is not None:
            unknown = set(pid_override) - {svc.name for svc in settings.instances}
            if unknown:
                raise pytest.UsageError(
                    f"--service-pids names {sorted(unknown)}; {host.name}'s services are "
                    f"{[svc.name for svc in settings.instances]}"
                )
        address = host.data.get("ssh_hostname") or host.name
        if address == "@local":
            address = "127.0.0.1"
        targets.append(HostTarget(host.name, settings, connect(host), pid_override, address))
    return targets


def _data(config: pytest.Config) -> dict[str, object]:
    """``--data KEY=VALUE`` as pyinfra reads it (JSON, numbers and booleans parsed)."""
    try:
        return cli_data(config.getoption("--data"))
    except BadInput as e:
        raise pytest.UsageError(str(e)) from None


def _limit(inventory: Inventory, patterns: list[str], path: str) -> list[PyinfraHost]:
    if not patterns:
        return list(inventory)
    chosen: list[PyinfraHost] = []
    for pattern in patterns:
        try:
            matches = list(inventory.get_group(pattern))
        except NoGroupError:
            matches = [host for host in inventory if fnmatch(host.name, pattern)]
        if not matches:
            raise pytest.UsageError(
                f"--limit {pattern}: no host or group of {path} matches "
                f"(hosts: {', '.join(host.name for host in inventory)})"
            )
        chosen += [host for host in matches if host not in chosen]
    return chosen


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[TARGETS] = _load_targets(session.config)
    session.config.stash[REPORT] = []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize over hosts, or hosts x services, with ids like ``gpu-01::coder::health``."""
    targets = metafunc.config.stash[TARGETS]
    check = metafunc.definition.originalname.removeprefix("test_")
    if "service" in metafunc.fixturenames:
        services = [svc for target in targets for svc in target.services()]
        metafunc.parametrize("service", services, ids=[f"{s.where}::{check}" for s in services])
    elif "target" in metafunc.fixturenames:
        metafunc.parametrize("target", targets, ids=[f"{t.name}::{check}" for t in targets])


@pytest.fixture(autouse=True)
def _reachable(request: pytest.FixtureRequest) -> None:
    """One line per check when its host does not answer, instead of a backend traceback."""
    if "service" in request.fixturenames:
        target = request.getfixturevalue("service").target
    elif "target" in request.fixturenames:
        target = request.getfixturevalue("target")
    else:
        return
    if target.unreachable:
        pytest.fail(target.unreachable, pytrace=False)


@pytest.fixture
def gpu_tolerance(pytestconfig: pytest.Config) -> int:
    """Bytes a service or the GPU may use above its plan."""
    return int(pytestconfig.getoption("--gpu-tolerance-mib")) * MIB


@pytest.fixture
def request_timeout(pytestconfig: pytest.Config) -> float:
    return float(pytestconfig.getoption("--request-timeout"))


@pytest.fixture
def report(pytestconfig: pytest.Config) -> list[str]:
    """Lines for the end-of-run summary (measurements an operator wants even when all pass)."""
    return pytestconfig.stash[REPORT]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(REPORT, [])
    if lines:
        terminalreporter.section("llmhost measurements")
        for line in lines:
            terminalreporter.write_line(line)
