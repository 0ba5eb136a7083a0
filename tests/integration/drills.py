"""What the failure drills share: a deploy running in the background, pyinfra's results table,
the bytes a deploy uploaded, and a rollout watched by clients."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import guest_client
from lab_guest import GUEST, LAYOUT, ROOT, SERVICES, deploy_command, on_guest, unit

from llmhost.layout import Layout
from llmhost.remote import run as remote
from llmhost_lab import lab

# A row of pyinfra's results table: operation, hosts, success, error, no change ("-" is 0).
_ROW = re.compile(r"^\s+(llmhost \| .*?)\s{2,}(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$", re.M)
# With --debug, pyinfra logs every SFTP upload with its local source.
_UPLOAD = re.compile(r"Attempting upload of (.+) to (\S+)$", re.M)


@dataclass(frozen=True)
class OpResult:
    success: int
    error: int
    no_change: int


def results(output: str) -> dict[str, OpResult]:
    """pyinfra's results table: each operation's own name (without its deploys') to its row."""
    table = {}
    for row in _ROW.finditer(output):
        success, error, no_change = (0 if v == "-" else int(v) for v in row.groups()[2:])
        table[row[1].rsplit(" | ", 1)[-1]] = OpResult(success, error, no_change)
    return table


def op_result(output: str, name: str) -> OpResult:
    """The results-table row of the one operation whose name starts with ``name``."""
    rows = [row for op, row in results(output).items() if op.startswith(name)]
    assert len(rows) == 1, f"{len(rows)} result rows for {name!r} in:\n{output[-4000:]}"
    return rows[0]


def changed(output: str) -> list[str]:
    """The operations that changed the host."""
    return [op for op, row in results(output).items() if row.success]


def uploads(output: str, under: str) -> dict[str, int]:
    """The files a ``--debug`` deploy uploaded into the host directory ``under``: their sizes."""
    prefix = under.rstrip("/") + "/"
    return {
        dest: Path(src).stat().st_size
        for src, dest in _UPLOAD.findall(output)
        if dest.startswith(prefix)
    }


class LiveDeploy:
    """The README's deploy, running in the background, its output read as it comes."""

    def __init__(self, *extra: str) -> None:
        self.proc = subprocess.Popen(
            deploy_command(*extra),
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_until(self, done: Callable[[], bool], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if self.proc.poll() is not None:
                raise AssertionError(f"the deploy ended before {what}:\n{self.output[-3000:]}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"no {what} after {timeout_s:.0f} s:\n{self.output[-3000:]}")
            time.sleep(0.1)

    def wait_on_guest(self, condition: str, what: str, timeout_s: int) -> None:
        """Wait for a guest shell condition, polled on the guest so that the signal is not late."""
        guest = lab.find(GUEST)
        assert guest is not None
        poll = f"until {condition}; do sleep 0.2; done"
        waiter = subprocess.Popen(
            lab.ssh_command(guest, f"timeout {timeout_s} sh -c {shlex.quote(poll)}")
        )
        try:
            self.wait_until(lambda: waiter.poll() is not None, what, timeout_s + 30)
        finally:
            waiter.kill()
        assert waiter.returncode == 0, f"no {what} after {timeout_s} s"

    def wait(self, timeout_s: float) -> int:
        """The deploy's exit status, once it and its output are complete."""
        returncode = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=10)
        return returncode

    def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        # pyinfra may finish the running operation after Ctrl-C, or stop at once.
        return self.wait(900)


def with_pins(*extra: str) -> tuple[Layout, tuple[str, str]]:
    """The layout of the lab's data with more pins, and the deploy's --data for them."""
    pins = [*LAYOUT.settings.pip_extra, *extra]
    layout = Layout(LAYOUT.settings.model_copy(update={"pip_extra": pins}))
    return layout, ("--data", f"llmhost_pip_extra={json.dumps(pins)}")


def same_pin(package: str) -> str:
    """``package`` pinned to the version the running release has, the one pip installs anyway:
    a new release that serves exactly like the old one."""
    version = on_guest(
        f"{runs_on(SERVICES[0])}/bin/python -c "
        f"'import importlib.metadata as m; print(m.version(\"{package}\"))'"
    ).strip()
    return f"{package}=={version}"


def runs_on(name: str) -> str:
    """The release venv a service's unit starts."""
    exec_start = on_guest(f"systemctl show -p ExecStart --value {unit(name)}")
    found = re.search(rf"{re.escape(LAYOUT.releases_dir)}/[0-9a-f]+", exec_start)
    assert found, exec_start
    return found[0]


_CLIENT_STOP = "/run/llmhost-drill-client-stop"


@contextlib.contextmanager
def _client(name: str, gateway: bool = False) -> Iterator[dict]:
    """Requests to one service (or its model through the gateway, as the lab's client) while
    the body runs; the counts, once it has."""
    svc = LAYOUT.settings.service(name)
    guest = lab.find(GUEST)
    assert guest is not None
    on_guest(f"rm -f {_CLIENT_STOP}")
    url = LAYOUT.url(svc, "/v1/completions")
    args = (url, svc.served_model_name, LAYOUT.api_key_env, _CLIENT_STOP, "900")
    if gateway:
        key = LAYOUT.gateway_key(next(iter(LAYOUT.settings.clients)))
        url = f"{LAYOUT.gateway_url}/v1/completions"
        args = (url, svc.served_model_name, key, _CLIENT_STOP, "900", LAYOUT.gateway_cert)
    command = shlex.join(remote.argv(guest_client, *args))
    proc = subprocess.Popen(lab.ssh_command(guest, command), text=True, stdout=subprocess.PIPE)
    counts: dict = {}
    try:
        yield counts
    finally:
        on_guest(f"touch {_CLIENT_STOP}")
        out, _ = proc.communicate(timeout=60)
        counts.update(json.loads(out))


def through_gateway(name: str) -> contextlib.AbstractContextManager[dict]:
    """Requests to a service's model through the gateway while the body runs; the counts."""
    return _client(name, gateway=True)


def started_ops(output: str) -> list[str]:
    """pyinfra's lines for the operations a deploy has started, in order."""
    return [line for line in output.splitlines() if line.startswith("--> Starting operation")]


def started(live: LiveDeploy, op: str) -> bool:
    """Whether the deploy has started an operation whose name holds ``op``."""
    return any(op in line for line in started_ops(live.output))


def roll_out(*extra: str) -> str:
    """A deploy that switches both services, one at a time, while a client of the one not
    switching counts its answers; the deploy's output. Every request must be answered."""
    first, second = SERVICES
    live = LiveDeploy(*extra)
    # While the first service switches, the second serves; then the other way round. The
    # first's switch is over (healthy again) once the deploy goes on to the second's unit.
    with _client(second) as during_first:
        live.wait_until(lambda: started(live, f"Unit {unit(second)}"), f"{second}'s turn", 1500)
    with _client(first) as during_second:
        returncode = live.wait(900)
    assert returncode == 0, live.output[-5000:]
    for name, counts in ((second, during_first), (first, during_second)):
        print(f"drill new pin: {name} answered {counts['ok']} requests in {counts['seconds']} s "
              f"while the other switched, {counts['failed']} failed")  # fmt: skip
        assert counts["ok"] > 0 and counts["failed"] == 0, counts
    return live.output
