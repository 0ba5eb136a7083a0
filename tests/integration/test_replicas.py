"""Two replicas of the general service on the lab guest, behind the gateway: one killed with
kill -9, then a change to general switching them one at a time, while a client asks the model
through the gateway all along. No request may fail; the post-deploy suite names the replica
that restarted.

One test, in the order that costs the fewest vLLM starts: the second replica comes up beside
general's own unit, which is replica 1 and keeps serving (one start), the kill (one), the
change rolled out from there (two: each replica; coder untouched), back to one replica (none:
the second is removed), and the change taken back (one). A pin rollout (every service on a new
release, with the venv build it costs) is the install drill's.
"""

from __future__ import annotations

import json
import re
import shlex
import time

import guest_watch
from drills import LiveDeploy, op_result, started_ops, through_gateway
from lab_guest import HOST, LAYOUT, DeployRun, deploy, host_checks, on_guest

from llmhost.layout import unit_name
from llmhost.remote import run as remote

GENERAL = LAYOUT.settings.service("general")
# The lab's second core is general's; its second replica takes the first (coder's) too.
REPLICAS = {"general": {"replicas": 2, "cpu_threads_bind": [GENERAL.cpu_threads_bind, "0"]}}
DATA = ("--data", f"llmhost_service_overrides={json.dumps(REPLICAS)}")
# The change rolled out: a flag of general's own (vLLM's default max-logprobs is 20).
CHANGE = {"extra_args": ["--max-logprobs", "21"]}
ROLLED = (
    "--data",
    f"llmhost_service_overrides={json.dumps({'general': {**REPLICAS['general'], **CHANGE}})}",
)
ONE = ("--data", f"llmhost_service_overrides={json.dumps({'general': CHANGE})}")
FIRST, SECOND = unit_name("general"), unit_name("general-2")


def _show(unit: str, *props: str) -> dict[str, str]:
    out = on_guest(f"systemctl show {' '.join(f'-p {p}' for p in props)} {unit}")
    return dict(line.split("=", 1) for line in out.splitlines())


def _replicas_up() -> None:
    serving = _show(FIRST, "MainPID")
    run = deploy(*DATA)
    assert run.returncode == 0, run.output[-5000:]
    # Scaling out starts the new replica and restarts none that serves.
    assert op_result(run.output, f"Start {SECOND}").success == 1
    assert op_result(run.output, f"Start {FIRST}").success == 0
    assert _show(FIRST, "MainPID") == serving, f"{FIRST} restarted when general scaled out"
    for n, unit in enumerate((FIRST, SECOND)):
        state = _show(unit, "ActiveState", "ExecStart")
        assert state["ActiveState"] == "active", (unit, state)
        assert f"--port {GENERAL.port + n} " in state["ExecStart"], state
    backend = on_guest(f"cat {LAYOUT.gateway_config}").split("backend general\n", 1)[1]
    assert "balance leastconn" in backend and "server general-2 " in backend, backend[:800]
    print(f"\ndrill replicas: {SECOND} up beside {FIRST} behind the gateway's general backend")


def _kill_one() -> None:
    url = f"http://127.0.0.1:{GENERAL.port}/health"
    with through_gateway("general") as counts:
        time.sleep(5)  # answers from both replicas before the kill
        victim = _show(FIRST, "MainPID")["MainPID"]
        args = (FIRST, url, victim, "600")
        timeline = json.loads(on_guest(shlex.join(remote.argv(guest_watch, *args))))
        time.sleep(5)  # and after it, from both again
    healthy_s, final = timeline[-1]
    assert final["health"] == 200 and final["NRestarts"] == "1", timeline
    print(
        f"drill kill -9 {FIRST}: /health 200 again {healthy_s:.1f} s after the kill; through "
        f"the gateway {counts['ok']} answers in {counts['seconds']} s, {counts['failed']} failed "
        f"{counts['errors']}"
    )
    assert counts["ok"] > 0 and counts["failed"] == 0, counts
    # The suite names the replica that restarted, and only it.
    # The suite is given the deploy's --data, as a user who deployed with it would.
    checks = host_checks(*DATA, "-k", "no_restarts")
    report = checks.stdout
    assert checks.returncode != 0, report[-3000:]
    assert f"{HOST}::general: systemd restarted {FIRST} 1 time(s)" in report, report[-3000:]
    assert set(re.findall(r"::([\w-]+): systemd restarted", report)) == {"general"}, report


def _roll_out() -> None:
    coder = _show(unit_name("coder"), "MainPID")
    live = LiveDeploy(*ROLLED)
    with through_gateway("general") as counts:
        returncode = live.wait(900)
    assert returncode == 0, live.output[-5000:]
    for unit in (FIRST, SECOND):
        assert "--max-logprobs 21 " in _show(unit, "ExecStart")["ExecStart"], unit
    assert _show(unit_name("coder"), "MainPID") == coder, "coder restarted for general's change"
    # One replica at a time: the second restarted only once the first answered /health.
    ops = started_ops(live.output)
    order = [next(i for i, op in enumerate(ops) if f"Start {u}" in op) for u in (FIRST, SECOND)]
    assert order[0] < order[1], ops
    first_up = int(_show(FIRST, "ActiveEnterTimestampMonotonic")["ActiveEnterTimestampMonotonic"])
    second = _show(SECOND, "ExecMainStartTimestampMonotonic")
    assert int(second["ExecMainStartTimestampMonotonic"]) > first_up, (first_up, second)
    print(
        f"drill a change rolled out over replicas: through the gateway {counts['ok']} answers "
        f"in {counts['seconds']} s, {counts['failed']} failed {counts['errors']}"
    )
    assert counts["ok"] > 0 and counts["failed"] == 0, counts


def _scale_in() -> None:
    serving = _show(FIRST, "MainPID")
    run = deploy(*ONE)
    assert run.returncode == 0, run.output[-5000:]
    assert op_result(run.output, "Stop and remove units of replicas").success == 1
    gone = on_guest(f"systemctl show -p LoadState --value {SECOND}").strip()
    assert gone == "not-found", f"{SECOND} is still {gone}"
    # Back to one replica: the first keeps serving, unrestarted.
    assert _show(FIRST, "MainPID") == serving, f"{FIRST} restarted when general scaled in"
    print(f"drill replicas: {SECOND} removed, {FIRST} serving on")


def test_replicas_serve_through_a_kill_and_a_rollout(converged: DeployRun) -> None:
    start = time.monotonic()
    try:
        _replicas_up()
        _kill_one()
        _roll_out()
        _scale_in()
    finally:
        # Later modules on this guest find general as the data has it.
        restored = deploy()
    assert restored.returncode == 0, restored.output[-5000:]
    assert _show(FIRST, "ActiveState")["ActiveState"] == "active"
    print(f"drill replicas: {time.monotonic() - start:.0f} s, general as the data has it")
