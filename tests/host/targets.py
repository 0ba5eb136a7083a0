"""Reads one deployed host through testinfra for the post-deploy checks (``tests/host``).

A ``HostTarget`` is a pyinfra inventory host turned into a testinfra connection plus its
validated settings; a ``ServiceTarget`` is one service on it. They fetch what the tests
compare (systemd properties, the service's PIDs, nvidia-smi rows, the probe's answers); the
comparing itself lives in ``llmhost.observe.checks``.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pytest
import testinfra
from pyinfra.api.host import Host as PyinfraHost
from pyinfra.connectors.local import LocalConnector
from testinfra.backend.base import CommandResult
from testinfra.host import Host as TestinfraHost

from llmhost.applied_plan import AppliedPlan, AppliedPlanError, AppliedService
from llmhost.facts.nvidia import NvidiaComputeApp, NvidiaComputeApps, NvidiaGpu, NvidiaGpus
from llmhost.layout import Layout, url_host
from llmhost.observe.checks import parse_systemctl_show
from llmhost.observe.reach import reach
from llmhost.remote import agent as probe
from llmhost.remote import run as remote
from llmhost.settings import ServiceSpec, Settings

SHOW_PROPERTIES = (
    "ActiveState",
    "SubState",
    "UnitFileState",
    "NRestarts",
    "MainPID",
    "ControlGroup",
    "InvocationID",
    "FragmentPath",
    "DropInPaths",
)


def fail_on(problems: list[str]) -> None:
    """Fail the current check with its problems as the whole message.

    The sentences are the report; a traceback would only repeat them and show locals, where a
    secret could sit.
    """
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def connect(host: PyinfraHost) -> TestinfraHost:
    """A testinfra connection from the pyinfra host's own connection data."""
    data = host.data
    sudo = bool(data.get("_sudo"))
    to = reach(host.name, data.dict())
    if issubclass(host.connector_cls, LocalConnector) or to.local:
        return testinfra.get_host("local://", sudo=sudo)
    user, port = f"{to.user}@" if to.user else "", f":{to.port}" if to.port else ""
    return testinfra.get_host(
        f"ssh://{user}{to.hostname}{port}",
        ssh_identity_file=to.key,
        ssh_extra_args=shlex.join(to.options),
        # One multiplexed connection for the whole run instead of one per command (~3x faster).
        controlpath=os.path.join(tempfile.gettempdir(), f"llmhost-ssh-{host.name}"),
        sudo=sudo,
    )


@dataclass
class HostTarget:
    name: str
    settings: Settings
    host: TestinfraHost
    # Drill only (--service-pids): the services' PIDs, given instead of read from systemd.
    pid_override: dict[str, list[int]] | None = None
    # Where the controller reaches the host (its ssh_hostname): the gateway's clients do too.
    address: str = "127.0.0.1"

    @property
    def layout(self) -> Layout:
        return Layout(self.settings)

    @cached_property
    def plan(self) -> AppliedPlan:
        path = self.layout.plan
        result = self.run("cat %s", path)
        if result.rc != 0:
            pytest.fail(
                f"{self.name}: cannot read {path} ({result.stderr.strip()}); run the deploy first",
                pytrace=False,
            )
        try:
            return AppliedPlan.from_json(result.stdout, f"{self.name}: {path}")
        except AppliedPlanError as e:
            pytest.fail(str(e), pytrace=False)

    def run(self, command: str, *args: str, where: str | None = None) -> CommandResult:
        try:
            return self.host.run(command, *args)
        except RuntimeError as e:
            # testinfra's ssh backend raises RuntimeError(result) when ssh itself fails (255).
            detail = str(getattr(e.args[0], "stderr", e) if e.args else e).strip()
        pytest.fail(f"{where or self.name}: ssh to the host failed: {detail}", pytrace=False)

    @cached_property
    def unreachable(self) -> str | None:
        """Why no command runs on the host, once per run (None: it answers)."""
        try:
            self.host.run("true")
        except RuntimeError as e:
            detail = str(getattr(e.args[0], "stderr", e) if e.args else e).strip()
            return f"{self.name}: ssh to the host failed: {detail}"
        return None

    def probe(self, mode: str, where: str | None = None, **args: Any) -> Any:
        """Run ``llmhost.remote.agent`` on the host and return its JSON answer."""
        command = remote.argv(probe, mode, json.dumps(args))
        result = self.run(" ".join(["%s"] * len(command)), *command, where=where)
        if result.rc != 0:
            # Not check_output: its message would repeat the whole probe source.
            pytest.fail(
                f"{where or self.name}: llmhost.remote.agent {mode} on the host exited "
                f"{result.rc}: "
                f"{result.stderr.strip()[-800:]}",
                pytrace=False,
            )
        return json.loads(result.stdout)

    def gpus(self) -> list[NvidiaGpu]:
        fact = NvidiaGpus()
        return fact.process(self.output(fact.command()).splitlines())

    def compute_apps(self) -> list[NvidiaComputeApp]:
        fact = NvidiaComputeApps()
        return fact.process(self.output(fact.command()).splitlines())

    def output(self, command: str, *args: str, where: str | None = None) -> str:
        """A command's stdout; a failing command fails the check with its stderr."""
        result = self.run(command, *args, where=where)
        if result.rc != 0:
            pytest.fail(
                f"{where or self.name}: `{result.command.decode(errors='replace')}` exited "
                f"{result.rc}: {result.stderr.strip()[-800:]}",
                pytrace=False,
            )
        return result.stdout

    @property
    def api_key_file(self) -> str:
        """The deploy's 0600 env file ``VLLM_API_KEY=...`` that both units read."""
        return self.layout.api_key_env

    @property
    def check_clients(self) -> dict[str, str | None]:
        """The gateway clients the checks may use: every model, no limit (the load smoke sends
        many requests at once); each with its key file, None for a key generated on the host."""
        usable = {
            name: client.key_file
            for name, client in self.settings.clients.items()
            if client.models is None and client.rpm is client.concurrency is None
        }
        if not usable:
            pytest.skip(
                f"{self.name}: every gateway client has limits or a list of models; the checks "
                'need one without (e.g. llmhost_gateway_clients["ops"] = None)'
            )
        return usable

    def services(self) -> list[ServiceTarget]:
        """Each unit: a service, or each of its replicas (``gpu-01::general-2``)."""
        return [ServiceTarget(self, spec) for spec in self.settings.instances]

    def all_service_pids(self) -> list[int]:
        return [pid for svc in self.services() for pid in svc.pids()]


@dataclass
class ServiceTarget:
    target: HostTarget
    spec: ServiceSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def where(self) -> str:
        """How failure messages name it: ``gpu-01::coder``."""
        return f"{self.target.name}::{self.name}"

    @property
    def unit(self) -> str:
        return self.target.layout.unit_name(self.spec)

    @property
    def env_file(self) -> str:
        return self.target.layout.env_path(self.spec)

    @property
    def planned(self) -> AppliedService:
        try:
            return self.target.plan.services[self.name]
        except KeyError:
            pytest.fail(
                f"{self.where}: plan.json has no service {self.name!r} (it has "
                f"{sorted(self.target.plan.services)}); re-run the deploy",
                pytrace=False,
            )

    def url(self, path: str) -> str:
        return f"http://{url_host(self.planned.bind_host)}:{self.planned.port}{path}"

    def show(self) -> dict[str, str]:
        args = " ".join(f"-p {prop}" for prop in SHOW_PROPERTIES)
        return parse_systemctl_show(
            self.target.output(f"systemctl show {args} %s", self.unit, where=self.where)
        )

    def pids(self) -> list[int]:
        """Every process in the unit's cgroup (vLLM's API server and its engine core)."""
        if self.target.pid_override is not None:
            return self.target.pid_override.get(self.name, [])
        return sorted(self.probe("unit_pids", unit=self.unit))

    def main_pid(self) -> int:
        pids = (
            self.pids() if self.target.pid_override is not None else [int(self.show()["MainPID"])]
        )
        if not pids or not pids[0]:
            pytest.fail(
                f"{self.where}: {self.unit} has no main process (not running)", pytrace=False
            )
        return pids[0]

    def probe(self, mode: str, **args: Any) -> Any:
        return self.target.probe(mode, where=self.where, **args)

    def journal(self) -> list[str]:
        """Log lines of the current run only: its processes' and systemd's about it."""
        invocation = self.show()["InvocationID"]
        if not invocation:
            return []
        return self.target.output(
            "journalctl --no-pager -q -o cat _SYSTEMD_INVOCATION_ID=%s + INVOCATION_ID=%s",
            invocation,
            invocation,
            where=self.where,
        ).splitlines()

    def chat_body(self) -> dict[str, Any]:
        return {
            "model": self.planned.served_model_name,
            "messages": [{"role": "user", "content": "Say hello in five words."}],
            "max_tokens": 16,
            # vLLM's extension: at least a few tokens, so even a tiny lab model returns text.
            "min_tokens": 4,
            "temperature": 0,
        }
