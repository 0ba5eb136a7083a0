"""A config file put in place only once the component's own checker accepts it, so a bad
config never reaches the running service (``promtool check config|rules``)."""

from __future__ import annotations

import hashlib
from io import BytesIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.facts.files import Sha256File

from llmhost.facts.batch import fact


@operation()
def checked_file(content: str, dest: str, check: list[str], mode: str = "644", group: str = "root"):
    """
    Upload ``content`` beside ``dest``, run ``check`` on it, then move it over ``dest``.

    + content: the file's text
    + dest: where it goes on the host
    + check: the checker's command line; the staged file's path is appended to it
    + mode: the file's mode (owner root)
    + group: the file's group (the reader the component runs as)

    The staged copy is checked at its own path; a failing check removes it and fails the
    operation with the checker's message, leaving ``dest`` as it was. ``dest`` holding
    ``content`` already is a no-op, whatever its neighbours. Callers reload the component when
    this will change.

    **Example:**

    .. code:: python

        checked_file(
            content=rules_text, dest="/etc/prometheus/llmhost-rules.yml",
            check=["promtool", "check", "rules"], group="prometheus",
        )
    """
    data = content.encode()
    if fact(Sha256File, path=dest) == hashlib.sha256(data).hexdigest():
        host.noop(f"{dest} already up to date")
        return
    staged = f"{dest}.llmhost-new"
    yield FileUploadCommand(BytesIO(data), staged)
    q_staged, q_dest = QuoteString(staged), QuoteString(dest)
    yield StringCommand(
        "chown", QuoteString(f"root:{group}"), q_staged, "&&", "chmod", mode, q_staged
    )
    yield StringCommand(
        "{", *(QuoteString(arg) for arg in check), q_staged, ";", "}",
        "||", "{", "rm", "-f", q_staged, ";", "exit", "1", ";", "}",
    )  # fmt: skip
    yield StringCommand("mv", q_staged, q_dest)
