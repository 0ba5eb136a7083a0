"""How the controller reaches a host outside pyinfra (``llmhost status``, the post-deploy
checks): from the same ``ssh_*`` host data pyinfra connects with."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Reach:
    """Where and how to ssh to one host; ``local`` for ``@local``."""

    hostname: str
    local: bool = False
    user: str | None = None
    port: int | None = None
    key: str | None = None
    # ``-o`` options: BatchMode fails instead of prompting (CI); LogLevel keeps ssh's notices out
    # of stderr, which the checks and status quote.
    options: list[str] = field(default_factory=list)

    def ssh_argv(self, command: list[str]) -> list[str]:
        """``command`` run on the host (locally for ``@local``)."""
        if self.local:
            return command
        argv = ["ssh", *self.options]
        if self.key:
            argv += ["-i", self.key]
        if self.port:
            argv += ["-p", str(self.port)]
        user = f"{self.user}@" if self.user else ""
        # ssh joins its arguments into one shell line: quote each.
        return [*argv, f"{user}{self.hostname}", shlex.join(command)]


def reach(name: str, data: dict[str, Any]) -> Reach:
    """The host ``name`` as its pyinfra data reaches it."""
    hostname = str(data.get("ssh_hostname") or name)
    if hostname == "@local" or name == "@local":
        return Reach(hostname="@local", local=True)
    options = ["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
    if str(data.get("ssh_strict_host_key_checking", "")).lower() in ("no", "off", "false"):
        options += ["-o", "StrictHostKeyChecking=no"]
    if data.get("ssh_known_hosts_file"):
        options += ["-o", f"UserKnownHostsFile={data['ssh_known_hosts_file']}"]
    key = data.get("ssh_key")
    port = data.get("ssh_port")
    return Reach(
        hostname=hostname,
        user=str(data["ssh_user"]) if data.get("ssh_user") else None,
        port=int(port) if port else None,
        key=os.path.expanduser(str(key)) if key else None,
        options=options,
    )
