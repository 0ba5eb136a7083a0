"""The one way a step says it is complete: a marker file written last, atomically."""

from __future__ import annotations

from pyinfra.api import QuoteString, StringCommand


def written_last(path: str, content: str) -> StringCommand:
    """Write ``content`` to ``path`` through a temporary file and a rename, so the marker is
    either absent or whole: a step cut off before it is never taken for a complete one."""
    tmp = f"{path}.tmp"
    return StringCommand(
        "echo",
        QuoteString(content),
        ">",
        QuoteString(tmp),
        "&&",
        "mv",
        QuoteString(tmp),
        QuoteString(path),
    )
