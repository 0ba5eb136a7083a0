"""A Python venv holding a pinned vLLM, built by a background job only when the pins change."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from llmhost.facts.batch import fact
from llmhost.facts.jobs import Job
from llmhost.operations import jobs, paths

# Run as: sh -c INSTALL install VENV STAMP PYTHON DIGEST FIND_LINKS IMPORT REMOVE PACKAGE... (values
# never enter the script's text; FIND_LINKS and REMOVE may be empty, REMOVE is a space-separated
# list). A fresh venv each time: what a cut-off run left is never built upon. Each step's output
# goes to the job's journal; the stamp is written last, atomically.
INSTALL = """\
set -eu
venv=$1 stamp=$2 python=$3 digest=$4 links=$5 check=$6 remove=$7; shift 7
t0=$(date +%s)
# One install per release at a time, whoever started it.
exec 9>"$venv.lock"; flock 9
rm -rf "$venv"
"$python" -m venv "$venv"
echo "llmhost: installing $* into $venv"
"$venv/bin/pip" install --progress-bar off --no-compile ${links:+--find-links "$links"} "$@"
[ -z "$remove" ] || "$venv/bin/pip" uninstall --yes $remove
# The services' user cannot write bytecode into the venv, so it is written here for what they
# load: all that importing the check module loads, then the rest of its package (what vLLM's
# engine loads later). The venv's other ~15,000 files, which nothing imports, are left: compiling
# them cost a minute of CPU per install. Best effort, as pip's own compile: some packages ship
# files for newer Pythons (torch's py312_*).
"$venv/bin/python" -c "import $check"
package=$("$venv/bin/python" -c 'import importlib.util as u, sys
print(u.find_spec(sys.argv[1].split(".")[0]).submodule_search_locations[0])' "$check")
"$venv/bin/python" -m compileall -qq -j 0 "$package" || true
echo "$digest" > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
echo "llmhost: installed $(($(du -sb "$venv" | cut -f 1) / 1048576)) MiB in $(($(date +%s) - t0)) s"
"""


def release_id(python: str, packages: list[str], remove: list[str], find_links: str | None) -> str:
    """What a venv is built from; another id is another release, in a directory of its own."""
    spec = json.dumps([python, packages, remove, find_links], sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()


@operation()
def pinned(
    path: str,
    packages: list[str],
    unit: str,
    stamp: str,
    python: str = "python3",
    remove: list[str] | None = None,
    find_links: str | None = None,
    wheelhouse: str | None = None,
    pip_cache_dir: str | None = None,
    index: bool = True,
    import_check: str = "vllm",
):
    """
    Start installing pinned packages into a venv, as a background job (``jobs.finished``
    waits for it); nothing to do when the venv has them or the job is under way.

    + path: the venv's directory
    + packages: requirement specifiers, each pinned (``vllm==0.33.0``)
    + unit: the job's transient unit (``llmhost-install-<venv name>.service``)
    + stamp: the file written last, once the venv is complete, holding the release id of
      what it is built from (``release_id``: pins, interpreter, removals, wheel source)
    + python: the interpreter the venv is made with
    + remove: packages to uninstall after the install (ones a build pulls in that break it)
    + find_links: a directory of wheels on the host for pip's ``--find-links``
    + wheelhouse: a directory of wheels on the controller, synced to ``find_links`` first
      (only when installing: an installed release does not read it)
    + pip_cache_dir: pip's cache directory on the host (a restarted install downloads nothing
      twice)
    + index: whether pip may use the host's package index; False installs from ``find_links``
      alone (pip prefers the index's copy of a wheel that both have)
    + import_check: a module that must import once the install is done; importing it, then
      compiling the rest of its top-level package, writes the bytecode the venv's users load
      (for a release: the module the services' launcher runs)

    The job goes on when the controller is lost, and a later run waits for it instead of
    starting another. The stamp is written last, so a cut-off install is never taken for a
    complete one.

    **Example:**

    .. code:: python

        venv.pinned(
            path="/opt/llmhost/venvs/3f2a9c0d1e4b5a69",
            packages=["vllm==0.33.0"],
            unit="llmhost-install-3f2a9c0d1e4b5a69.service",
            stamp="/opt/llmhost/venvs/3f2a9c0d1e4b5a69/.llmhost-installed",
        )
    """
    remove = remove or []
    digest = release_id(python, packages, remove, find_links)
    job = fact(Job, unit=unit, done=stamp, watch=path)
    if job["done"] == digest:
        host.noop(f"venv {path} already has {' '.join(packages)}")
        return
    if job["running"]:
        host.noop(f"venv {path} already being installed by {unit}")
        return
    # The job's lock lives beside the venv: its parent (the releases directory) must exist.
    yield StringCommand("mkdir", "-p", QuoteString(str(PurePosixPath(path).parent)))
    if wheelhouse and find_links:
        # Every wheel's state in one read, not two round trips per wheel as files.sync.
        yield from paths.directories._inner(entries=[{"path": find_links}])
        wheels = sorted(p for p in Path(wheelhouse).iterdir() if p.is_file())
        yield from paths.files._inner(
            entries=[{"dest": f"{find_links}/{p.name}", "src": str(p)} for p in wheels]
        )
    args = [path, stamp, python, digest, find_links or "", import_check, " ".join(remove)]
    environment = {"PIP_CACHE_DIR": pip_cache_dir} if pip_cache_dir else {}
    if not index:
        environment["PIP_NO_INDEX"] = "1"
    yield from jobs.start(
        unit,
        f"llmhost: install {' '.join(packages)} into {path}",
        ["sh", "-c", INSTALL, "install", *args, *packages],
        environment=environment or None,
    )
