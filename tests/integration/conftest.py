"""The Molecule sequence on a fresh lab guest: create, converge, idempotence, verify, destroy.

Each worker's guest is a rebuild: a first guest's deploy is cut off once the models are on its
model store (a host directory, like a disk that outlives the host), that guest is destroyed, and
the tests' guest is created on the same store. Its first converge is then both the fresh host's
and the rebuild's (test_converge.py, test_rebuild.py), one converge instead of two.

`make integration` runs the modules on two guests at once, one pytest-xdist worker each, a
whole module at a time (``-n 2 --dist loadfile --no-loadscope-reorder``): each worker converges
its own guest, and no module depends on which modules ran before it on either. xdist hands the
modules out in collection order, each to whichever worker is free; the order is LONGEST_FIRST's,
so that neither worker is left running a long module alone at the end (xdist's own order, most
tests first, left the one-test modules that cost the most for last).
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator

import pytest
from drills import LiveDeploy, started
from lab_guest import (
    GUEST,
    MODEL_STORE,
    DeployRun,
    FreshConverge,
    LostGuest,
    deploy,
    services_state,
    store_files,
)

from llmhost_lab import lab

# Longest first, by what each cost in the last fresh run (the README's table); unlisted
# modules go last, in file order.
LONGEST_FIRST = (
    "test_drills.py",
    "test_replicas.py",
    "test_hub.py",
    "test_bad_input.py",
    "test_bench.py",
    "test_secrets.py",
    "test_gateway.py",
    "test_rollout.py",
    "test_converge.py",
    "test_monitoring.py",
    "test_rebuild.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: a module's tests keep their order


@pytest.fixture(scope="session")
def lost_guest() -> LostGuest:
    """A first guest on an empty model store, lost once its deploy has put the models there."""
    lab.down(GUEST, quiet=True)
    shutil.rmtree(MODEL_STORE, ignore_errors=True)
    lab.up(GUEST, model_store=str(MODEL_STORE))
    live = LiveDeploy("--debug")
    # The models phase is over once the deploy waits for its background jobs.
    live.wait_until(lambda: started(live, "| Background jobs:"), "the wait for the jobs", 900)
    live.stop(signal.SIGKILL)
    lost = LostGuest(live.output, store_files())
    lab.down(GUEST)
    return lost


@pytest.fixture(scope="session")
def guest(lost_guest: LostGuest) -> Iterator[lab.Guest]:
    """The lost guest's rebuild: a new guest on the same model store."""
    created = lab.up(GUEST, model_store=str(MODEL_STORE))
    yield created
    lab.down(GUEST)
    shutil.rmtree(MODEL_STORE, ignore_errors=True)


@pytest.fixture(scope="session")
def fresh_converge(guest: lab.Guest) -> FreshConverge:
    # Both at once: whichever module a worker runs first, the second run follows the first.
    first = deploy("--debug")
    assert first.returncode == 0, first.output[-5000:]
    store = store_files()
    before = services_state()
    second = deploy()
    return FreshConverge(first, second, before, services_state(), store)


@pytest.fixture(scope="session")
def converged(fresh_converge: FreshConverge) -> DeployRun:
    return fresh_converge.first


@pytest.fixture
def start_converged(converged: DeployRun) -> DeployRun:
    """A converged guest with no restarts counted, whatever the test before left behind."""
    run = deploy()
    assert run.returncode == 0, run.output[-5000:]
    return run
