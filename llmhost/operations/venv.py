"""A Python venv holding a pinned vLLM, reinstalled only when the pins change."""

from __future__ import annotations

from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.facts.files import FileContents
from pyinfra.operations import files

from llmhost.layout import VENV_STAMP, release_id
from llmhost.operations.marks import written_last


@operation()
def pinned(
    path: str,
    packages: list[str],
    python: str = "python3",
    remove: list[str] | None = None,
    find_links: str | None = None,
    wheelhouse: str | None = None,
    pip_cache_dir: str | None = None,
    import_check: str = "vllm",
):
    """
    Install pinned packages into a venv; done again only when the pins change.

    + path: the venv's directory
    + packages: requirement specifiers, each pinned (``vllm==0.33.0``)
    + python: the interpreter the venv is made with
    + remove: packages to uninstall after the install (ones a build pulls in that break it)
    + find_links: a directory of wheels on the host for pip's ``--find-links``
    + wheelhouse: a directory of wheels on the controller, synced to ``find_links`` first
      (only when installing: an installed release does not read it)
    + pip_cache_dir: pip's cache directory on the host
    + import_check: a module that must import once the install is done

    A stamp file holding the digest of all of the above is written last, so an interrupted
    install is never taken for a complete one: the next run installs again. Its steps hold a
    lock (``<path>.lock``), so that run first waits for what the interrupted one left running.

    **Example:**

    .. code:: python

        venv.pinned(path="/opt/llmhost/venvs/3f2a9c0d1e4b5a69", packages=["vllm==0.33.0"])
    """
    remove = remove or []
    stamp = f"{path}/{VENV_STAMP}"
    digest = release_id(python, packages, remove, find_links)
    if host.get_fact(FileContents, path=stamp) == [digest]:
        host.noop(f"venv {path} already has {' '.join(packages)}")
        return

    pip = f"{path}/bin/pip"
    # Stopping pyinfra does not stop its remote command: a pip of an interrupted run may still
    # be installing, and a second pip in the same venv fails on the metadata it is writing.
    lock = ["flock", QuoteString(f"{path}.lock")]
    # The lock lives beside the venv: its parent (the releases directory) must exist first.
    yield StringCommand("mkdir", "-p", QuoteString(str(PurePosixPath(path).parent)))
    yield StringCommand("rm", "-f", QuoteString(stamp))
    if wheelhouse and find_links:
        yield from files.sync._inner(
            src=wheelhouse, dest=find_links, mode="644", add_deploy_dir=False
        )
    yield StringCommand(*lock, QuoteString(python), "-m", "venv", QuoteString(path))
    yield StringCommand(*lock, *_pip_install(pip, packages, find_links, pip_cache_dir))
    if remove:
        yield StringCommand(
            *lock, QuoteString(pip), "uninstall", "--yes", *(QuoteString(p) for p in remove)
        )
    # The services' user cannot write bytecode into the venv: without it, each start compiles.
    # Best effort, as pip's own: some packages ship files for newer Pythons (torch's py312_*).
    python_bin = QuoteString(f"{path}/bin/python")
    compileall = [python_bin, "-m", "compileall", "-qq", "-j", "0", QuoteString(f"{path}/lib")]
    yield StringCommand(*lock, *compileall, "||", "true")
    yield StringCommand(python_bin, "-c", QuoteString(f"import {import_check}"))
    yield written_last(stamp, digest)


def _pip_install(
    pip: str, packages: list[str], find_links: str | None, cache_dir: str | None
) -> list[str | QuoteString]:
    env = ["env", QuoteString(f"PIP_CACHE_DIR={cache_dir}")] if cache_dir else []
    links = ["--find-links", QuoteString(find_links)] if find_links else []
    # Compiled afterwards, on every core: pip compiles file by file, half of its time here.
    flags = ["--quiet", "--progress-bar", "off", "--no-compile"]
    return [*env, QuoteString(pip), "install", *flags, *links, *(QuoteString(p) for p in packages)]
