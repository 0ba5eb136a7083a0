"""Release venvs and model snapshots no service uses any more, removed but for the previous."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from llmhost.facts.batch import fact
from llmhost.facts.host import SnapshotDirs


@operation()
def pruned(root: str, keep: list[str], marker: str, spare: int = 1, unmarked: bool = False):
    """
    Remove the directories under ``root`` that are neither kept nor among the newest spares.

    + root: the directory holding one directory per snapshot
    + keep: names of the snapshots in use
    + marker: the file a snapshot's completion writes last (its time orders the spares)
    + spare: how many of the newest other complete snapshots stay, for a rollback
    + unmarked: also remove directories without the marker (leftovers of failed installs)

    Each removal holds ``<dir>.lock`` (the lock the venv install holds), so it never pulls a
    directory from under a pip that a stopped deploy left running.

    **Example:**

    .. code:: python

        snapshots.pruned(
            root="/opt/llmhost/venvs", keep=["3f2a9c0d1e4b5a69"],
            marker=".llmhost-installed", unmarked=True,
        )
    """
    others = [d for d in fact(SnapshotDirs, root=root, marker=marker) if d["name"] not in keep]
    complete = sorted((d for d in others if d["marked"] is not None), key=lambda d: -d["marked"])
    spares = {d["name"] for d in complete[:spare]}
    gone = [d["name"] for d in others if d["name"] not in spares and (unmarked or d["marked"])]
    if not gone:
        host.noop(f"{root} holds only what is in use and {len(spares)} spare(s)")
        return
    for name in sorted(gone):
        path = f"{root}/{name}"
        yield StringCommand(
            "flock",
            QuoteString(f"{path}.lock"),
            "rm",
            "-rf",
            QuoteString(path),
            QuoteString(f"{path}.lock"),
        )
