"""``preflight.check_host`` against faked facts: a host that can work passes, and each
problem is one line naming the key and the fix (the lab's bad-input catalogue runs the same on a
real host)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llmhost import preflight
from llmhost.applied_plan import AppliedPlan
from llmhost.facts.batch import Batch
from llmhost.facts.nvidia import reserved_bytes
from llmhost.layout import NOLOGIN, USER_COMMENT, Layout
from llmhost.settings import Settings

GIB = 1024**3
H200 = {
    "index": 0,
    "uuid": "GPU-1",
    "name": "NVIDIA H200",
    "memory_total_bytes": 143771 * 1024**2,
    "memory_used_bytes": 0,
    "memory_free_bytes": 143156 * 1024**2,
    "compute_cap": (9, 0),
    "driver_version": "580.159.04",
}


@dataclass
class FakeHost:
    """What ``preflight`` reads of a host: a fresh Debian 12 GPU host that can work."""

    name: str = "gpu-01"
    facts: dict[str, Any] = field(
        default_factory=lambda: {
            "LinuxDistribution": {"name": "Debian", "major": 12},
            "PythonVersion": (3, 11),
            "FileContents": None,
            "PasswdAccount": None,
            "ResolvedAddresses": [],
            "FindDirectories": [],
            "PackageIndexFiles": {
                "sources": ["https://index.example/simple/vllm/"],
                "files": ["vllm-0.33.0-cp38-abi3-manylinux_2_31_x86_64.whl"],
                "errors": [],
            },
            "Memory": 256 * 1024,
            "DebPackages": {},
            "PathStates": [],
            "NvidiaGpus": [H200],
            # sshd, and the deploy's own gateway and a service holding their planned ports.
            "Listeners": [
                {
                    "address": "0.0.0.0",
                    "port": 22,
                    "pid": 412,
                    "command": "sshd",
                    "unit": "ssh.service",
                },
                {
                    "address": "0.0.0.0",
                    "port": 443,
                    "pid": 900,
                    "command": "haproxy",
                    "unit": "haproxy.service",
                },
                {
                    "address": "127.0.0.1",
                    "port": 8001,
                    "pid": 901,
                    "command": "python3",
                    "unit": "llmhost-coder.service",
                },
            ],
            "FreeDiskBytes": 2000 * GIB,
        }
    )

    reads: list[str] = field(default_factory=list)
    # A fact's value for one path, where a test gives one (else the fact's value above).
    at_path: dict[tuple[str, str], Any] = field(default_factory=dict)

    def get_fact(self, fact: type, **kwargs: Any) -> Any:
        self.reads.append(fact.__name__)
        if fact is Batch:
            return [self._value(cls, args) for cls, args in kwargs["facts"]]
        return self._value(fact, kwargs)

    def _value(self, fact: type, args: dict[str, Any]) -> Any:
        return self.at_path.get((fact.__name__, args.get("path", "")), self.facts[fact.__name__])


def _run(monkeypatch: pytest.MonkeyPatch, facts: dict[str, Any], **data: Any) -> list[str]:
    fake = FakeHost()
    fake.facts.update(facts)
    monkeypatch.setattr(preflight, "host", fake)
    settings = Settings.from_host_data({"llmhost_stack": "single-vendor", **data}, "gpu-01")
    try:
        preflight.check_host(settings)
    except preflight.PreflightError as e:
        return str(e).splitlines()
    return []


def test_a_host_that_can_work_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(monkeypatch, {}) == []


def test_a_converged_host_is_read_in_one_command(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeHost()
    # The release venv has the pinned vLLM: the package index is not asked.
    fake.facts["FindDirectories"] = ["/opt/llmhost/venvs/x/lib/python3.11/vllm-0.33.0.dist-info"]
    monkeypatch.setattr(preflight, "host", fake)
    settings = Settings.from_host_data(
        {"llmhost_stack": "single-vendor", "llmhost_vllm_version": "0.33.0"}, "gpu-01"
    )
    preflight.check_host(settings)
    assert fake.reads == ["Batch"]


def test_without_the_index_the_pin_comes_from_the_wheelhouse(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = {"llmhost_pip_index": False, "llmhost_wheelhouse": str(tmp_path)}
    (tmp_path / "vllm-0.32.0-cp38-abi3-manylinux_2_31_x86_64.whl").touch()
    # The index offers 0.33.0, but pip may not use it.
    [problem] = _run(monkeypatch, {}, **data)
    assert problem.startswith("gpu-01: llmhost_vllm_version '0.33.0': no vllm wheel of that")
    assert "llmhost_pip_index is False" in problem and "pip download vllm==0.33.0" in problem
    (tmp_path / "vllm-0.33.0-cp38-abi3-manylinux_2_31_x86_64.whl").touch()
    assert _run(monkeypatch, {}, **data) == []


def test_a_vllm_whose_tcpstore_binds_every_address_needs_the_firewall_said(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index = {
        "sources": ["https://index.example/simple/vllm/"],
        "files": ["vllm-0.25.0-cp38-abi3-manylinux_2_31_x86_64.whl"],
        "errors": [],
    }
    facts = {"PackageIndexFiles": index}
    [problem] = _run(monkeypatch, facts, llmhost_vllm_version="0.25.0")
    assert problem.startswith("gpu-01: llmhost_vllm_version '0.25.0': vLLM before 0.28.0 opens")
    assert "set llmhost_vllm_tcpstore_firewalled = True" in problem
    data = {"llmhost_vllm_version": "0.25.0", "llmhost_vllm_tcpstore_firewalled": True}
    assert _run(monkeypatch, facts, **data) == []


def test_the_deploys_own_user_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    ours = {
        "uid": 998,
        "comment": USER_COMMENT,
        "home": "/srv/x",
        "shell": NOLOGIN,
        "own_group": True,
    }
    assert _run(monkeypatch, {"PasswdAccount": ours}) == []


@pytest.mark.parametrize(
    ("facts", "data", "expect"),
    [
        (
            {"NvidiaGpus": [{**H200, "driver_version": "550.54.14"}]},
            {},
            "gpu-01: NVIDIA driver 550.54.14 is older than 580.65.06",
        ),
        ({"NvidiaGpus": []}, {}, "gpu-01: no NVIDIA GPU answers"),
        (
            {
                "PasswdAccount": {
                    "uid": 1, "comment": "", "home": "/usr/sbin", "shell": NOLOGIN,
                    "own_group": True,
                }
            },
            {"llmhost_user": "daemon"},
            "gpu-01: llmhost_user 'daemon' is an existing account (uid 1, home /usr/sbin)",
        ),
        (
            {"ResolvedAddresses": []},
            {"llmhost_bind_host": "vllm.internal"},
            "llmhost_bind_host 'vllm.internal' does not resolve on the host",
        ),
        (
            {"ResolvedAddresses": ["10.0.0.5"]},
            {"llmhost_bind_host": "gpu-01.internal"},
            "resolves to 10.0.0.5, not only loopback",
        ),
        (
            {},
            {"llmhost_service_overrides": {"coder": {"extra_args": ["-q", "fp8"]}}},
            "llmhost_services['coder'].extra_args: -q (read as --quantization) is planned",
        ),
        ({"FreeDiskBytes": 5 * GIB}, {}, "has 5.0 GiB free; the models need"),
        ({"PythonVersion": (3, 9)}, {}, "llmhost_python 'python3' is 3.9; need Python >= 3.10"),
        ({"LinuxDistribution": {"name": "CentOS", "major": 7}}, {}, "OS is CentOS 7"),
        (
            {},
            {"llmhost_gateway_port": 22},
            "llmhost_gateway_port 22 is already held by sshd (pid 412, ssh.service) on 0.0.0.0",
        ),
        (
            {"Listeners": [{"address": "::", "port": 9090, "pid": 77, "command": "nginx",
                            "unit": "nginx.service"}]},
            {},
            "llmhost_prometheus_port 9090 is already held by nginx (pid 77, nginx.service)",
        ),
    ],
    ids=[
        "old-driver", "no-gpu", "foreign-user", "unresolvable-bind", "public-bind-name",
        "planned-quantization", "small-disk", "old-python", "unsupported-os", "port-of-sshd",
        "port-of-another-program",
    ],
)  # fmt: skip
def test_each_problem_is_one_line(
    monkeypatch: pytest.MonkeyPatch, facts: dict[str, Any], data: dict[str, Any], expect: str
) -> None:
    problems = _run(monkeypatch, facts, **data)
    assert any(expect in line for line in problems), problems
    assert all(line.startswith("gpu-01: ") for line in problems), problems


def test_what_preflight_read_in_place_is_not_written_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeHost()
    settings = Settings.from_host_data({"llmhost_stack": "single-vendor"}, "gpu-01")
    layout = Layout(settings)
    owned = layout.owned_paths
    plan = {"type": "file", "mode": "644", "user": "root", "group": "root",
            "sha1": hashlib.sha1(b"{}").hexdigest()}  # fmt: skip
    config = {"type": "directory", "mode": "750", "user": "root", "group": "vllm", "sha1": None}
    fake.facts["PathStates"] = [
        plan if p == layout.plan else config if p == settings.config_dir else None for p in owned
    ]
    monkeypatch.setattr(preflight, "host", fake)
    checked = preflight.check_host(settings)
    assert checked.files_in_place([{"dest": layout.plan, "content": "{}"}])
    # Another content, mode or owner; a path it did not read; a missing file: written.
    assert not checked.files_in_place([{"dest": layout.plan, "content": "{ }"}])
    assert not checked.files_in_place([{"dest": layout.plan, "content": "{}", "mode": "600"}])
    assert not checked.files_in_place([{"dest": "/etc/other", "content": "{}"}])
    assert not checked.files_in_place([{"dest": layout.api_key_env, "content": "x"}])
    assert checked.directories_in_place(
        [{"path": settings.config_dir, "group": "vllm", "mode": "750"}]
    )
    assert not checked.directories_in_place([{"path": settings.config_dir, "mode": "750"}])


# A second card: the two-GPU fixture's (tests/unit/facts/nvidia.NvidiaGpus/two_gpus.json) UUIDs.
UUID0 = "GPU-24c93693-1df4-8965-cd32-9f8883599a38"
UUID1 = "GPU-00000000-1df4-8965-cd32-9f8883599a38"
TWO = [{**H200, "uuid": UUID0}, {**H200, "index": 1, "uuid": UUID1}]


def test_every_gpu_is_read_and_planned(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeHost()
    fake.facts["NvidiaGpus"] = TWO
    monkeypatch.setattr(preflight, "host", fake)
    settings = Settings.from_host_data({"llmhost_stack": "single-vendor"}, "gpu-01")
    checked = preflight.check_host(settings)
    # Each service alone on a card, known by its UUID, sized with that card's own reservation.
    assert [(g.index, g.uuid, g.services) for g in checked.plan.gpus] == [
        (0, UUID0, ("coder",)),
        (1, UUID1, ("general",)),
    ]
    assert checked.plan.gpus[0].budget_bytes == int(0.9 * (143156 * 1024**2))
    assert [s.gpus for s in checked.applied.services.values()] == [[0], [1]]


@pytest.mark.parametrize(
    ("gpus", "facts", "expect"),
    [
        (
            [2],
            {"NvidiaGpus": TWO},
            f"gpu-01: plan: llmhost_services['coder'].gpus: 2 is not a GPU of this host, which "
            f"has 0 ({UUID0}), 1 ({UUID1}); pin one of those",
        ),
        (
            ["GPU-11111111-1df4-8965-cd32-9f8883599a38"],
            {"NvidiaGpus": TWO},
            "gpu-01: plan: llmhost_services['coder'].gpus: 'GPU-11111111-1df4-8965-cd32-"
            "9f8883599a38' is not a GPU of this host",
        ),
        (
            [0, UUID0],
            {"NvidiaGpus": TWO},
            "gpu-01: plan: llmhost_services['coder'].gpus names GPU 0 twice",
        ),
    ],
    ids=["index", "uuid", "both-names"],
)
def test_a_pinned_gpu_not_on_the_host_is_refused(
    monkeypatch: pytest.MonkeyPatch, gpus: list[Any], facts: dict[str, Any], expect: str
) -> None:
    problems = _run(monkeypatch, facts, llmhost_service_overrides={"coder": {"gpus": gpus}})
    assert len(problems) == 1 and problems[0].startswith(expect), problems


def test_a_gpu_smaller_than_a_fixed_fraction_assumed_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # coder's own 0.3 was sized for the H200; pinned to a 24 GB card it holds no sequence.
    small = {**H200, "index": 1, "uuid": UUID1, "name": "NVIDIA L4",
             "memory_total_bytes": 23034 * 1024**2,
             "memory_free_bytes": 22495 * 1024**2}  # fmt: skip
    overrides = {"coder": {"gpus": [1], "gpu_memory_utilization": 0.3}}
    [problem] = _run(
        monkeypatch, {"NvidiaGpus": [H200, small]}, llmhost_service_overrides=overrides
    )
    assert problem.startswith("gpu-01: plan: coder: gpu_memory_utilization 0.3 is 6.6 GiB of ")
    assert "raise it to" in problem


@pytest.mark.parametrize(
    ("second", "expect"),
    [
        ({"compute_cap": (7, 5), "name": "Tesla T4"}, "gpu-01: GPU 1 Tesla T4 has compute "),
        ({"memory_total_bytes": None}, "gpu-01: GPU 1 NVIDIA H200: nvidia-smi reports no total"),
    ],
    ids=["old-card", "no-total"],
)
def test_each_gpu_is_checked(
    monkeypatch: pytest.MonkeyPatch, second: dict[str, Any], expect: str
) -> None:
    problems = _run(monkeypatch, {"NvidiaGpus": [TWO[0], {**TWO[1], **second}]})
    assert problems and problems[0].startswith(expect), problems


def _checked_with(
    monkeypatch: pytest.MonkeyPatch, gpu: dict[str, Any], applied: str | None
) -> AppliedPlan:
    fake = FakeHost()
    fake.facts["NvidiaGpus"] = [gpu]
    settings = Settings.from_host_data({"llmhost_stack": "single-vendor"}, "gpu-01")
    if applied is not None:
        fake.at_path["FileContents", Layout(settings).plan] = applied.splitlines()
    monkeypatch.setattr(preflight, "host", fake)
    return preflight.check_host(settings).applied


def test_a_second_deploy_plans_with_the_reservation_the_host_runs_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Seen on an H200: idle, total - used - free read 615 MiB; serving both services, 619 MiB.
    first = _checked_with(monkeypatch, H200, None)
    serving = {**H200, "memory_used_bytes": 128465 * 1024**2, "memory_free_bytes": 14687 * 1024**2}
    assert reserved_bytes(serving) == reserved_bytes(H200) + 4 * 1024**2
    assert _checked_with(monkeypatch, serving, first.to_json()) == first
    # Without the applied plan, the drifted reading plans other KV numbers: what made a second
    # run rewrite the plan on the host.
    assert _checked_with(monkeypatch, serving, None) != first
    # Another card (or driver) reads far off: the new reading is planned with.
    other = {**H200, "memory_free_bytes": 142156 * 1024**2}
    moved = _checked_with(monkeypatch, other, first.to_json())
    assert moved.gpu_reserved_bytes == [reserved_bytes(other)] != first.gpu_reserved_bytes


# Four 24 GB cards: the primary stack's coder and general each split over two (tensor parallel).
L4 = {**H200, "name": "NVIDIA L4", "memory_total_bytes": 23034 * 1024**2,
      "memory_free_bytes": 22700 * 1024**2, "compute_cap": (8, 9)}  # fmt: skip
FOUR = [{**L4, "index": i, "uuid": f"GPU-{i}"} for i in range(4)]


@pytest.mark.parametrize(("shm_mib", "refused"), [(64, True), (2048, False)])
def test_tensor_parallel_needs_room_in_dev_shm(
    monkeypatch: pytest.MonkeyPatch, shm_mib: int, refused: bool
) -> None:
    fake = FakeHost()
    fake.facts["NvidiaGpus"] = FOUR
    fake.at_path["FreeDiskBytes", preflight.SHM] = shm_mib * 1024**2
    monkeypatch.setattr(preflight, "host", fake)
    settings = Settings.from_host_data({"llmhost_stack": "primary"}, "gpu-01")
    try:
        checked = preflight.check_host(settings)
        problems = []
    except preflight.PreflightError as e:
        problems = str(e).splitlines()
    if refused:
        assert problems == [
            "gpu-01: /dev/shm has 64 MiB free; coder, general run tensor parallel, which needs "
            "1024 MiB there for the ranks' shared memory: enlarge it (a tmpfs size= in "
            "/etc/fstab; a container's --shm-size or --ipc=host)"
        ]
    else:
        assert problems == []
        assert [s.tensor_parallel_size for s in checked.plan.services.values()] == [2, 2]
