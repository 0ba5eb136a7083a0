"""Several paths' type, mode, owner and content digest in one command: what pyinfra's File,
Directory and Sha1File facts say of each, for the price of one round trip."""

from __future__ import annotations

from typing import TypedDict

from pyinfra.api import FactBase, QuoteString, StringCommand
from typing_extensions import override

# Run as: sh -c STATES states PATH... One line per path, in order: "-" when it does not exist,
# else "TYPE MODE USER GROUP SHA1" (SHA1 "-" but for regular files). A symlink is a link,
# whatever it points at, as pyinfra's File fact has it.
STATES = """\
for p do
  if [ -L "$p" ]; then t=link; elif [ -d "$p" ]; then t=directory
  elif [ -f "$p" ]; then t=file; elif [ -e "$p" ]; then t=other; else echo -; continue; fi
  s=-; [ "$t" != file ] || s=$(sha1sum < "$p" | cut -d " " -f 1)
  echo "$t $(stat -c '%a %U %G' -- "$p") $s"
done"""


class PathState(TypedDict):
    # "file", "directory", "link" or "other".
    type: str
    # Octal permission bits as stat prints them ("644", "2750").
    mode: str
    user: str
    group: str
    # The content's SHA-1, for a regular file; None for anything else.
    sha1: str | None


class PathStates(FactBase[list[PathState | None]]):
    """
    Each path's state, in the order given; None where it does not exist.

    .. code:: python

        [{"type": "file", "mode": "600", "user": "vllm", "group": "vllm",
          "sha1": "da39a3ee5e6b4b0d3255bfef95601890afd80709"}, None]
    """

    @override
    @staticmethod
    def default() -> list[PathState | None]:
        return []

    @override
    def command(self, paths: list[str]) -> StringCommand:
        return StringCommand(
            "sh", "-c", QuoteString(STATES), "states", *(QuoteString(p) for p in paths)
        )

    @override
    def process(self, output: list[str]) -> list[PathState | None]:
        states: list[PathState | None] = []
        for line in output:
            if line == "-":
                states.append(None)
                continue
            kind, mode, user, group, sha1 = line.split(" ")
            states.append(
                PathState(
                    type=kind, mode=mode, user=user, group=group, sha1=None if sha1 == "-" else sha1
                )
            )
        return states
