"""Units brought to running: a vLLM service not left until its /health answers, and put back on
its last good release when it does not; a daemon restarted or reloaded on what changed."""

from __future__ import annotations

import re
from collections.abc import Sequence

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import FindFiles

from llmhost.facts.batch import fact
from llmhost.facts.host import UnitState

# Shell: reload systemd's units, then make sure it took $u as written: loaded, nothing on disk
# newer than what it loaded, and no line of it or its drop-ins ignored (an unknown or misspelt
# key is only a warning to systemd, which then runs the unit without it). Sets $why on failure.
RELOADED = """\
reloaded() {
  # The journal's position now: only what this daemon-reload logs counts.
  at=$(journalctl -q -n 1 -o cat --show-cursor 2>/dev/null | sed -n 's/^-- cursor: //p')
  why="systemctl daemon-reload failed"
  systemctl daemon-reload || return 1
  loaded=$(systemctl show -p LoadState -p NeedDaemonReload "$u" | tr '\\n' ' ')
  why="systemd did not load $u as written ($loaded)"
  case $loaded in *LoadState=loaded*) ;; *) return 1 ;; esac
  case $loaded in *NeedDaemonReload=no*) ;; *) return 1 ;; esac
  # systemd's own words: "/etc/systemd/system/UNIT:LINE: Unknown key name ..., ignoring."
  ignored=$(journalctl -q --no-pager -o cat --after-cursor "$at" _PID=1 2>/dev/null |
    grep -E "/$u(\\.d/[^:]*)?:[0-9]+: " | head -3)
  why="systemd ignored lines of $u: $ignored"
  [ -z "$ignored" ]
}
"""

# Run as: sh -c SWITCH switch UNIT URL TIMEOUT GOOD_DIR FILE... (values never enter the
# script's text). Queues the unit's restart and waits until systemd holds no job for it (its
# ExecStartPost holds the start job until /health answers; an older unit's ends at exec), it is
# active and its URL answers, failing fast when the unit dies or restarts meanwhile. On success
# it copies FILE... (unit, env file) into GOOD_DIR; on failure it puts those copies back, starts
# the unit again and waits for it, then fails with one line: what failed, whether the rollback
# is healthy, and the failed start's journal.
SWITCH = (
    "u=$1 url=$2 timeout=$3 good=$4; shift 4\n"
    + RELOADED
    + """\
healthy() {
  n0=$(systemctl show -p NRestarts --value "$u"); end=$(($(date +%s) + timeout))
  while :; do
    job=$(systemctl list-jobs --no-legend "$u"); state=$(systemctl is-active "$u")
    if [ -z "$job" ] && [ "$state" = active ] && curl -fsS -o /dev/null --max-time 5 "$url"
    then return; fi
    # A restart job passes through inactive; with no job left, only active is a start.
    if [ "$(systemctl show -p NRestarts --value "$u")" != "$n0" ] ||
      { [ -z "$job" ] && [ "$state" != active ]; }
    then why="it stopped before $url answered"; return 1; fi
    if [ "$(date +%s)" -ge "$end" ]; then why="$url not 200 after ${timeout}s"; return 1; fi
    sleep 2
  done
}
start() {
  reloaded || return 1
  why="systemd could not start it"
  # reset-failed: restarts are counted from this start on. --no-block: a blocking restart
  # would wait for /health (ExecStartPost) through every Restart=always retry.
  systemctl enable -q "$u" &&
    { systemctl reset-failed "$u" 2>/dev/null; systemctl restart --no-block "$u"; }
}
if start && healthy; then mkdir -p "$good" && cp -p "$@" "$good/"; exit; fi
failed=$why; journal=$(journalctl -u "$u" -n 40 --no-pager)
if [ ! -d "$good" ]; then
  echo "$u: $failed; it has no earlier good release to roll back to" >&2
else
  for f in "$@"; do cp -p "$good/${f##*/}" "$f"; done
  t0=$(date +%s)
  if start && healthy; then
    echo "$u: $failed; rolled back to its last good release:" \\
      "healthy again after $(($(date +%s) - t0)) s" >&2
  else
    echo "$u: $failed; the rollback to its last good release failed too: $why" >&2
  fi
fi
printf '%s\\n' "$u: journal of the failed start:" "$journal" >&2
exit 1"""
)


@operation()
def retired(
    prefix: str, services: list[str], keep: list[str], unit_dir: str, env_dir: str, good_dir: str
):
    """
    Stop, disable and remove the units of ``services`` that are not in ``keep``: replicas
    removed (or units of an earlier naming, such as ``<service>-1``).

    + prefix: what every unit of the deploy's is named with (``llmhost-``)
    + services: the services whose units are looked for: ``<prefix><service>.service`` and
      ``<prefix><service>-<n>.service``
    + keep: the unit names the deploy runs now
    + unit_dir: where the unit files are
    + env_dir: where each unit's ``<name>.env`` is
    + good_dir: where each unit's last good copies are (``<good_dir>/<name>``)

    Units of other names (exporters, jobs, services no longer in the data) are never touched.

    **Example:**

    .. code:: python

        services.retired(
            prefix="llmhost-", services=["general"], keep=["llmhost-general.service"],
            unit_dir="/etc/systemd/system", env_dir="/etc/llmhost", good_dir="/etc/llmhost/good",
        )
    """
    mine = re.compile(
        rf"{re.escape(prefix)}((?:{'|'.join(map(re.escape, services))})(?:-[0-9]+)?)\.service"
    )
    found = fact(FindFiles, path=unit_dir, maxdepth=1, fname=f"{prefix}*.service")
    names = sorted(
        match[1]
        for match in (mine.fullmatch(path.rsplit("/", 1)[-1]) for path in found or [])
        if match and match[0] not in keep
    )
    if not names:
        host.noop("no units of removed replicas")
        return
    for name in names:
        unit = f"{prefix}{name}.service"
        yield StringCommand("systemctl", "disable", "--now", "-q", QuoteString(unit))
        files = (f"{unit_dir}/{unit}", f"{env_dir}/{name}.env", f"{good_dir}/{name}")
        yield StringCommand("rm", "-rf", *map(QuoteString, files))
        # A unit that failed stays listed until reset; once removed, this may find none.
        yield StringCommand(
            "systemctl", "reset-failed", QuoteString(unit), "2>/dev/null", "||", "true"
        )
    yield "systemctl daemon-reload"


@operation()
def healthy(
    unit: str,
    health_url: str,
    timeout_s: int,
    good_dir: str,
    release_files: list[str],
    sources: list[str] | None = None,
):
    """
    Start (or restart) a unit, wait until its health URL answers 200, else roll it back.

    + unit: the systemd unit
    + health_url: the URL that answers 200 once the service serves (vLLM's ``/health``)
    + timeout_s: how long the wait may take
    + good_dir: where copies of ``release_files`` that answered /health are kept
    + release_files: the files that say what the unit runs (its unit file, its env file)
    + sources: files the unit runs from; it is restarted when one is newer than its process
      (a file the deploy rewrites is: one call decides restarts for every source)

    A start that does not answer /health puts back the copies in ``good_dir`` (the unit file
    names the release venv and the model, so they come back too), starts the unit on them,
    waits for it, and fails, naming the unit, what failed, how the rollback went and the journal's
    tail (pyinfra prefixes each line with the host's name).

    An unchanged, running, enabled unit is not touched, except that restarts systemd made
    since the last deploy are acknowledged (``reset-failed`` zeroes NRestarts without touching
    the process), so the post-deploy checks count restarts from this deploy on.

    ``sources`` also carry the restart over a deploy that was stopped between changing a file
    and restarting the unit: the next run finds the file newer than the unit's main process.

    Co-located vLLM instances must start one at a time: each measures free GPU memory at
    start, so the next one starts only after this one is healthy.

    **Example:**

    .. code:: python

        services.healthy(
            unit="llmhost-coder.service", health_url="http://127.0.0.1:8001/health",
            timeout_s=1800, good_dir="/etc/llmhost/good/coder",
            release_files=["/etc/systemd/system/llmhost-coder.service"],
            sources=["/etc/systemd/system/llmhost-coder.service"],
        )
    """
    state = fact(UnitState, unit=unit, paths=sources or [])
    if state["changed"] or not state["running"]:
        yield StringCommand(
            "sh",
            "-c",
            QuoteString(SWITCH),
            "switch",
            *(QuoteString(str(v)) for v in (unit, health_url, timeout_s, good_dir)),
            *(QuoteString(f) for f in release_files),
        )
    elif not state["enabled"]:
        yield StringCommand("systemctl", "enable", QuoteString(unit))
    elif state["restarts"]:
        yield StringCommand("systemctl", "reset-failed", QuoteString(unit))
    else:
        host.noop(f"{unit} already running on what it should run")


# Whether a unit's files changed: a plain answer, or the operations that wrote them.
Changes = bool | Sequence[OperationMeta]


def changed(by: Changes) -> bool:
    """Once the operations ran (the run executes this one after them), what they did, with no
    command more; before that (pyinfra's diff without ``-y``), what they would do."""
    if isinstance(by, bool):
        return by
    return any(op.did_change() if op.is_complete() else op.will_change for op in by)


# Run as: sh -c ACTIVATE activate UNIT ACTION TIMEOUT GOOD_DIR LIVE FILE... (values never enter
# the script's text). Restarts or reloads the unit, then runs the shell command LIVE until it
# says the change took (TIMEOUT s): a reload can "succeed" while the daemon goes on with its old
# config (HAProxy's new workers could not bind). On success it copies FILE... into GOOD_DIR; on
# failure it puts those copies back, restarts or reloads again, checks again, then fails with
# one line: what did not take, whether the previous config runs again, and the journal.
ACTIVATE = (
    "u=$1 action=$2 timeout=$3 good=$4 live=$5; shift 5\n"
    + RELOADED
    + """\
took() {
  end=$(($(date +%s) + timeout))
  until said=$(sh -c "$live" 2>&1); do
    why="the running daemon is not on the new config ($said)"
    [ "$(date +%s)" -ge "$end" ] && return 1; sleep 1
  done
}
# LIVE may read T0: when the action was asked for (a daemon's own "loaded at" must be later).
act() {
  reloaded || return 1
  why="systemctl $action $u failed"; T0=$(date +%s); export T0; systemctl "$action" "$u"
}
if act && took; then mkdir -p "$good" && cp -p "$@" "$good/"; exit; fi
journal=$(journalctl -u "$u" -n 20 --no-pager)
what="$u: the $action did not take: $why"
if [ ! -d "$good" ]; then
  echo "$what, and there is no earlier good config to put back" >&2
else
  for f in "$@"; do cp -p "$good/${f##*/}" "$f"; done
  if act && took; then
    echo "$what; put back its last good config, which runs again (fix the cause, redeploy)" >&2
  else
    echo "$what; putting back its last good config did not take either" >&2
  fi
fi
printf '%s\\n' "$u: journal:" "$journal" >&2
exit 1"""
)


@operation()
def activated(
    unit: str,
    restarted: Changes,
    reloaded: Changes,
    sources: list[str],
    live: str,
    good_dir: str,
    config_files: list[str],
    timeout_s: int = 30,
):
    """
    A daemon running and enabled: restarted when its unit or flags changed (a ``sources``
    file newer than its process counts, so a deploy stopped before the restart is caught up),
    else reloaded when a file it rereads on reload changed (HAProxy starts new workers on the
    listening sockets while the old ones finish; Prometheus keeps its TSDB and alerts).

    + unit: the systemd unit
    + restarted: its unit, drop-in or flags changed in this deploy (or the operations that
      wrote them)
    + reloaded: a file it reads at (re)load changed in this deploy (or those operations)
    + sources: files its process reads only at start (EnvironmentFile=, flags)
    + live: a shell command on the host that succeeds once the running daemon has taken the
      change (its own report, its listeners; ``$T0``: when the restart or reload was asked
      for): every restart or reload is verified
    + good_dir: where copies of ``config_files`` that were verified live are kept
    + config_files: the files a change is made of (config, drop-in): put back from
      ``good_dir`` when ``live`` never succeeds, and the deploy fails
    + timeout_s: how long ``live`` may take to succeed

    **Example:**

    .. code:: python

        services.activated(unit="haproxy.service", restarted=[dropin], reloaded=[config],
                           sources=["/etc/llmhost/api_key.env"],
                           live="test -S /run/haproxy/master.sock",
                           good_dir="/etc/llmhost/good-config/gateway",
                           config_files=["/etc/haproxy/llmhost/haproxy.cfg"])
    """
    state = fact(UnitState, unit=unit, paths=sources)
    restart = changed(restarted) or bool(state["changed"]) or not state["running"]
    reload = not restart and changed(reloaded)
    if restart or reload:
        action = "restart" if restart else "reload"
        yield StringCommand(
            "sh", "-c", QuoteString(ACTIVATE), "activate",
            *(QuoteString(str(v)) for v in (unit, action, timeout_s, good_dir, live)),
            *(QuoteString(f) for f in config_files),
        )  # fmt: skip
    if not state["enabled"]:
        yield StringCommand("systemctl enable", QuoteString(unit))
    elif state["running"] and not (restart or reload):
        host.noop(f"{unit} already running on its config")
