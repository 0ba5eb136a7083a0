"""The Molecule sequence on a fresh lab guest: create, converge, idempotence, verify, destroy.

`make integration` runs the modules on two guests at once, one pytest-xdist worker each, a
whole module at a time (``-n 2 --dist loadfile``; xdist hands out the modules with the most
tests first, each to whichever worker is free): each worker converges its own guest, and no
module depends on which modules ran before it on either.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from lab_guest import GUEST, MODEL_STORE, DeployRun, FreshConverge, deploy, services_state

from llmhost_lab import lab


@pytest.fixture(scope="session")
def guest() -> Iterator[lab.Guest]:
    lab.down(GUEST, quiet=True)
    shutil.rmtree(MODEL_STORE, ignore_errors=True)
    created = lab.up(GUEST, model_store=str(MODEL_STORE))
    yield created
    lab.down(GUEST)
    shutil.rmtree(MODEL_STORE, ignore_errors=True)


@pytest.fixture(scope="session")
def fresh_converge(guest: lab.Guest) -> FreshConverge:
    # Both at once: whichever module a worker runs first, the second run follows the first.
    first = deploy()
    assert first.returncode == 0, first.output[-5000:]
    before = services_state()
    second = deploy()
    return FreshConverge(first, second, before, services_state())


@pytest.fixture(scope="session")
def converged(fresh_converge: FreshConverge) -> DeployRun:
    return fresh_converge.first


@pytest.fixture
def start_converged(converged: DeployRun) -> DeployRun:
    """A converged guest with no restarts counted, whatever the test before left behind."""
    run = deploy()
    assert run.returncode == 0, run.output[-5000:]
    return run
