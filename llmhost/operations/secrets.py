"""Secrets on the host: 0600 files owned by the service user, never on a command line."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.facts.files import File

from llmhost.facts.batch import fact


@operation()
def generated_api_key(path: str, user: str):
    """
    Generate an API key on the host once, as an environment file ``VLLM_API_KEY=...``.

    + path: the 0600 environment file
    + user: the user that owns it (the services read it through systemd as root anyway)

    The key is made on the host by Python's ``secrets``; it never crosses the wire in a
    command and an existing key is kept.

    **Example:**

    .. code:: python

        secrets.generated_api_key(path="/etc/llmhost/api_key.env", user="vllm")
    """
    if fact(File, path=path):
        host.noop(f"API key {path} already exists")
        return
    tmp = QuoteString(f"{path}.tmp")
    yield StringCommand(
        "umask 077 && python3 -c",
        QuoteString("import secrets; print('VLLM_API_KEY=' + secrets.token_urlsafe(32))"),
        ">",
        tmp,
        "&&",
        "chown",
        QuoteString(f"{user}:{user}"),
        tmp,
        "&&",
        "mv",
        tmp,
        QuoteString(path),
    )
