"""A vLLM systemd service brought to running, and not left until its /health answers."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.operations import systemd

from llmhost.facts.host import FilesChangedSinceStart, UnitRestarts

# Fails fast when the unit dies or restarts while we wait, with its journal's tail.
WAIT = """\
u={unit}; n0=$(systemctl show -p NRestarts --value $u); end=$(($(date +%s) + {timeout}))
until curl -fsS -o /dev/null --max-time 5 {url}; do
  if [ "$(systemctl show -p NRestarts --value $u)" != "$n0" ] || ! systemctl is-active -q $u; then
    journalctl -u $u -n 40 --no-pager >&2; echo "$u: stopped before {url} answered" >&2; exit 1
  fi
  if [ "$(date +%s)" -ge "$end" ]; then
    journalctl -u $u -n 40 --no-pager >&2; echo "$u: {url} not 200 after {timeout}s" >&2; exit 1
  fi
  sleep 2
done"""


@operation()
def healthy(
    unit: str,
    health_url: str,
    timeout_s: int,
    restarted: bool = False,
    sources: list[str] | None = None,
):
    """
    Start (or restart) a unit and wait until its health URL answers 200.

    + unit: the systemd unit
    + health_url: the URL that answers 200 once the service serves (vLLM's ``/health``)
    + timeout_s: how long the wait may take
    + restarted: restart the unit (this deploy changes what it runs)
    + sources: files the unit runs from; it is restarted when one is newer than its process

    An unchanged, running, enabled unit is not touched, except that restarts systemd made
    since the last deploy are acknowledged (``reset-failed`` zeroes NRestarts without touching
    the process), so the post-deploy checks count restarts from this deploy on.

    ``sources`` carry the restart over a deploy that was stopped between changing a file and
    restarting the unit: the next run finds the file newer than the unit's main process.

    Co-located vLLM instances must start one at a time: each measures free GPU memory at
    start, so the next one starts only after this one is healthy.

    **Example:**

    .. code:: python

        services.healthy(
            unit="llmhost-coder.service", health_url="http://127.0.0.1:8001/health",
            timeout_s=1800, restarted=unit.will_change,
            sources=["/etc/systemd/system/llmhost-coder.service"],
        )
    """
    if sources and not restarted:
        restarted = bool(host.get_fact(FilesChangedSinceStart, unit=unit, paths=sources))
    commands = list(
        systemd.service._inner(
            service=unit, running=True, enabled=True, restarted=restarted, daemon_reload=restarted
        )
    )
    if not commands:
        restarts = host.get_fact(UnitRestarts, unit=unit)
        if restarts:
            yield StringCommand("systemctl", "reset-failed", QuoteString(unit))
        return
    yield from commands
    yield WAIT.format(unit=unit, url=health_url, timeout=timeout_s)
