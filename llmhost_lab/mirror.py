"""The lab's hub mirror: Olah, a self-hosted Hugging Face mirror, serving the lab's tiny models
from local git repositories under hub-style names (``llmhost-lab/tiny-coder``), so that each
has a real 40-hex revision and the deploy's hub path (``source: hub``) runs against it.

Olah (offline, local git mirror mode) listens on loopback only; guests reach it through a small
front of ours (``mirror_front``) at ``ENDPOINT``, an address of the lab's own subnet on this
machine's loopback interface, which every guest routes to through its veth and nothing outside
this machine does. The front stands in for what Olah's local mode lacks and a site's mirror (or
the hub's CDN) has: byte ranges (an interrupted download resumes) and gated repos (a token).
It also logs the bytes it sent per request (``served.jsonl``), for the drills.

Weights are committed as git LFS objects, as on the hub: the commit pins their sha256.
``start`` is idempotent; the mirror stops when the last guest that asked for it goes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from llmhost_lab import lab, tinymodel

# In the lab's subnet, outside every guest's /30 (guests are 10.231.<index>.0/30, index >= 1).
ADDRESS = "10.231.0.1"
PORT = 8090
ENDPOINT = f"http://{ADDRESS}:{PORT}"
ORG = "llmhost-lab"
# Fixed dates and author: the same files always make the same commit, so a model's revision
# stays what it was across `lab up`s and controllers.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "llmhost lab",
    "GIT_AUTHOR_EMAIL": "lab@llmhost.invalid",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_NAME": "llmhost lab",
    "GIT_COMMITTER_EMAIL": "lab@llmhost.invalid",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
}
LFS_PATTERN = "*.safetensors"
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
# Published besides the lab's models, for the drill of a download killed half-way: tiny-coder's
# architecture and tokenizer with a wide MLP, ≈ 47 MiB of weights. huggingface_hub writes a
# download in 10 MiB pieces, so only a file this big is cut with bytes on disk.
WIDE = "tiny-coder-wide"
WIDE_INTERMEDIATE = 14336
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 10


def repos_dir() -> Path:
    """Olah's mirrors path: ``models/<org>/<name>`` git repositories."""
    return lab.CACHE_DIR / "mirror"


def state_dir() -> Path:
    """The running mirror: pid files, logs, its users, gated repos, the front's byte log."""
    return lab.STATE_DIR / "mirror"


def repo_dir(repo: str) -> Path:
    return repos_dir() / "models" / repo


def served_log() -> Path:
    return state_dir() / "served.jsonl"


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return lab._run("git", "-C", str(repo), *args, env=env).stdout.strip()


def publish(repo: str, src: Path) -> str:
    """Commit the files of ``src`` as ``repo`` (weights as LFS objects); its revision. A repo
    that holds them already keeps its commit; its LFS objects are written again, so a
    corrupted one is mended."""
    root = repo_dir(repo)
    if not (root / ".git").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        _git(root, "init", "-q", "-b", "main")
    for old in root.iterdir():
        if old.name != ".git":
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    (root / ".gitattributes").write_text(f"{LFS_PATTERN} filter=lfs diff=lfs merge=lfs -text\n")
    for file in sorted(p for p in src.iterdir() if p.is_file()):
        if file.match(LFS_PATTERN):
            (root / file.name).write_text(_store_lfs(root, file))
        else:
            shutil.copy2(file, root / file.name)
    _git(root, "add", "-A")
    if _git(root, "status", "--porcelain"):
        _git(root, "commit", "-q", "-m", f"{repo.rsplit('/', 1)[-1]}: published by the lab")
    return _git(root, "rev-parse", "HEAD")


def _store_lfs(root: Path, file: Path) -> str:
    """Put ``file`` in the repo's LFS store, as git-lfs does; its pointer's text."""
    data = file.read_bytes()
    oid = hashlib.sha256(data).hexdigest()
    lfs_object(repo_root=root, oid=oid).parent.mkdir(parents=True, exist_ok=True)
    lfs_object(repo_root=root, oid=oid).write_bytes(data)
    return LFS_POINTER.format(oid=oid, size=len(data))


def lfs_object(repo_root: Path, oid: str) -> Path:
    return repo_root / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid


def lfs_file(repo: str, name: str) -> Path:
    """Where the mirror keeps the bytes of the LFS file ``name`` of ``repo``'s head."""
    root = repo_dir(repo)
    pointer = _git(root, "show", f"HEAD:{name}")
    oid = pointer.split("oid sha256:", 1)[1].split()[0]
    return lfs_object(root, oid)


def unpublish(repo: str) -> None:
    shutil.rmtree(repo_dir(repo), ignore_errors=True)


def revision(repo: str) -> str:
    """The commit the mirror serves as ``repo``'s main."""
    root = repo_dir(repo)
    if not (root / ".git").is_dir():
        raise lab.LabError(f"the lab mirror has no {repo}; run `llmhost lab up --mirror`")
    return _git(root, "rev-parse", "main")


def hub_model(name: str) -> dict[str, object]:
    """A service's ``model`` for the lab model ``name`` from the mirror, pinned to its commit."""
    repo = f"{ORG}/{name}"
    return {"source": "hub", "repo": repo, "revision": revision(repo), "path": None}


def gate(repo: str, token: str) -> None:
    """From now on the front serves ``repo`` only to requests with this bearer token (it keeps
    the token's sha256, not the token)."""
    gated = _gated()
    gated[repo] = hashlib.sha256(token.encode()).hexdigest()
    (state_dir() / "gated.json").write_text(json.dumps(gated))


def ungate(repo: str) -> None:
    gated = _gated()
    gated.pop(repo, None)
    (state_dir() / "gated.json").write_text(json.dumps(gated))


def _gated() -> dict[str, str]:
    path = state_dir() / "gated.json"
    return json.loads(path.read_text()) if path.exists() else {}


def start(user: str) -> None:
    """The mirror up with the lab's models published, for the guest ``user`` (idempotent; the
    caller holds the lab's lock)."""
    state_dir().mkdir(parents=True, exist_ok=True)
    (state_dir() / "users").mkdir(exist_ok=True)
    (state_dir() / "users" / user).touch()
    for name, src in _models().items():
        publish(f"{ORG}/{name}", src)
    if _running("olah") and _running("front") and _answers():
        return
    _stop_processes()
    _add_address()
    olah_port = _free_port()
    olah = [str(Path(sys.executable).with_name("olah-cli")), "-c", _olah_config(olah_port)]
    front = [sys.executable, "-m", "llmhost_lab.mirror_front", f"{ADDRESS}:{PORT}"]
    front += [f"127.0.0.1:{olah_port}", str(state_dir())]
    _wait_ready([_spawn("olah", olah), _spawn("front", front)])
    print(f"lab: hub mirror (Olah) at {ENDPOINT}, serving {', '.join(_served())}", flush=True)


def release(user: str) -> None:
    """``user`` no longer needs the mirror; stop it when no running guest does (the caller
    holds the lab's lock)."""
    (state_dir() / "users" / user).unlink(missing_ok=True)
    running = {g.name for g in lab.guests() if lab.is_running(g)}
    users = state_dir() / "users"
    left = [u.name for u in users.iterdir() if u.name in running] if users.is_dir() else []
    if not left and (_running("olah") or _running("front") or _has_address()):
        _stop_processes()
        _del_address()
        print("lab: hub mirror stopped", flush=True)


def _models() -> dict[str, Path]:
    """What the mirror publishes: the lab's models, and the wide one (generated once)."""
    wide = lab.CACHE_DIR / "models" / WIDE
    seed = len(lab.MODELS) + 1
    tinymodel.ensure(wide, seed=seed, name=WIDE, intermediate=WIDE_INTERMEDIATE)
    return {**{name: lab.model_path(name) for name in lab.MODELS}, WIDE: wide}


def _served() -> list[str]:
    return [f"{ORG}/{name}@{revision(f'{ORG}/{name}')[:12]}" for name in _models()]


def _olah_config(port: int) -> str:
    """Offline: Olah serves the local repositories and never asks the hub."""
    config = state_dir() / "olah.toml"
    config.write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {port}\n'
        f'repos-path = "{state_dir() / "cache"}"\nmirrors-path = ["{repos_dir()}"]\n'
        f'mirror-scheme = "http"\nmirror-netloc = "{ADDRESS}:{PORT}"\n'
        f'mirror-lfs-netloc = "{ADDRESS}:{PORT}"\n'
        "[accessibility]\noffline = true\n"
    )
    return str(config)


def _spawn(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    # A session of its own: stopping it signals its whole process group.
    with (state_dir() / f"{name}.log").open("a") as log:
        proc = subprocess.Popen(
            argv,
            cwd=state_dir(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (state_dir() / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc


def _pid(name: str) -> int | None:
    path = state_dir() / f"{name}.pid"
    return int(path.read_text()) if path.exists() else None


def _running(name: str) -> bool:
    pid = _pid(name)
    marks = {"olah": b"olah-cli", "front": b"llmhost_lab.mirror_front"}
    try:
        return pid is not None and marks[name] in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def _stop_processes() -> None:
    for name in ("front", "olah"):
        pid = _pid(name)
        if pid is not None and _running(name):
            os.killpg(pid, signal.SIGTERM)
            if not lab._wait_exit(pid, STOP_TIMEOUT_S):
                os.killpg(pid, signal.SIGKILL)
                lab._wait_exit(pid, STOP_TIMEOUT_S)
        (state_dir() / f"{name}.pid").unlink(missing_ok=True)


def _has_address() -> bool:
    shown = lab._run("ip", "-o", "addr", "show", "dev", "lo").stdout
    return f" {ADDRESS}/32 " in shown


def _add_address() -> None:
    if not _has_address():
        lab._run("ip", "addr", "add", f"{ADDRESS}/32", "dev", "lo")


def _del_address() -> None:
    if _has_address():
        lab._run("ip", "addr", "del", f"{ADDRESS}/32", "dev", "lo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers() -> bool:
    repo = f"{ORG}/{next(iter(lab.MODELS))}"
    # The mirror is on this machine: never through a proxy the environment names.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{ENDPOINT}/api/models/{repo}/revision/main", timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _wait_ready(procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _answers():
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            logs = "".join(
                (state_dir() / f"{n}.log").read_text()[-1000:] for n in ("olah", "front")
            )
            _stop_processes()
            _del_address()
            raise lab.LabError(f"the lab's hub mirror did not come up at {ENDPOINT}:\n{logs}")
        time.sleep(0.5)
