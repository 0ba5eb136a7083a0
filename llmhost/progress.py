"""Each phase's duration per host in the deploy's output, as the run goes.

pyinfra names an operation of a packaged deploy ``deploy | phase | operation``; a phase ends
for a host when the host starts an operation of another phase, or disconnects.
"""

from __future__ import annotations

import time

from pyinfra import logger
from pyinfra.api.host import Host
from pyinfra.api.state import BaseStateCallback, State


def phase_of(state: State, op_hash: str) -> str | None:
    """The phase (the deploy's sub-deploy) an operation belongs to, from its name."""
    names = state.get_op_meta(op_hash).names
    parts = next(iter(names), "").split(" | ")
    return parts[1] if len(parts) >= 3 else None


class PhaseTimes(BaseStateCallback):
    def __init__(self) -> None:
        self._current: dict[str, tuple[str, float]] = {}
        self._started: dict[str, float] = {}

    def operation_host_start(self, state: State, host: Host, op_hash: str) -> None:
        phase = phase_of(state, op_hash)
        current = self._current.get(host.name)
        if phase is None or (current and current[0] == phase):
            return
        now = time.monotonic()
        self._started.setdefault(host.name, now)
        self._end_phase(host, now)
        self._current[host.name] = (phase, now)

    def host_disconnect(self, state: State, host: Host) -> None:
        now = time.monotonic()
        self._end_phase(host, now)
        if host.name in self._started:
            total = now - self._started.pop(host.name)
            logger.info(f"[{host.name}] llmhost phases done in {total:.1f} s")

    def _end_phase(self, host: Host, now: float) -> None:
        if ended := self._current.pop(host.name, None):
            logger.info(f"[{host.name}] {ended[0]}: {now - ended[1]:.1f} s")


def watch(state: State) -> None:
    """Time the phases of this run (once, however many hosts run the deploy)."""
    if not any(isinstance(h, PhaseTimes) for h in state.callback_handlers):
        state.add_callback_handler(PhaseTimes())
