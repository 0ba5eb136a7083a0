"""Gateway facts: the hashes of the client keys generated on the host (never the keys), and the
gateway certificate's names and expiry."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from typing import TypedDict

from pyinfra.api import FactBase, QuoteString, StringCommand
from typing_extensions import override


class KeyHashes(FactBase[dict[str, str]]):
    """
    ``{client: sha256 hex of its key}`` for each key file in ``keys_dir`` (a file holds one key
    and a newline; the hash is of the key alone, as HAProxy hashes the bearer token).

    .. code:: python

        {"alice": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}
    """

    default = dict

    @override
    def command(self, keys_dir: str) -> StringCommand:
        return StringCommand(
            f"d={shlex.quote(keys_dir)};",
            '[ -d "$d" ] || exit 0; for f in "$d"/*; do [ -f "$f" ] || continue;',
            "printf '%s ' \"${f##*/}\"; tr -d '\\n' < \"$f\" | sha256sum | cut -d' ' -f1; done",
        )

    @override
    def process(self, output: list[str]) -> dict[str, str]:
        found = {}
        for line in output:
            name, _, digest = line.strip().partition(" ")
            if name and len(digest) == 64:
                found[name] = digest
        return found


class Certificate(TypedDict):
    # ISO 8601, UTC.
    not_after: str
    names: list[str]
    sha256: str


class TlsCertificate(FactBase[Certificate | None]):
    """
    The certificate in a PEM file: when it expires, its subjectAltName entries (DNS names and
    IP addresses), its SHA-256 fingerprint; ``None`` when there is no readable certificate.

    .. code:: python

        {"not_after": "2028-03-06T04:00:00+00:00",
         "names": ["lab-gw", "localhost", "127.0.0.1"], "sha256": "AB:CD:..."}
    """

    @override
    def command(self, path: str) -> StringCommand:
        return StringCommand(
            "openssl x509 -noout -enddate -fingerprint -sha256 -ext subjectAltName -in",
            QuoteString(path),
            "2>/dev/null || true",
        )

    @override
    def process(self, output: list[str]) -> Certificate | None:
        return parse_x509_text(output)


def parse_x509_text(lines: list[str]) -> Certificate | None:
    """``openssl x509 -noout -enddate -fingerprint -sha256 -ext subjectAltName`` output."""
    not_after, sha256, names = None, None, []
    for raw in lines:
        line = raw.strip()
        if line.startswith("notAfter="):
            text = " ".join(line.removeprefix("notAfter=").split())
            not_after = datetime.strptime(text, "%b %d %H:%M:%S %Y GMT").replace(tzinfo=UTC)
        elif "Fingerprint=" in line:
            sha256 = line.partition("=")[2]
        elif line.startswith(("DNS:", "IP Address:")):
            for entry in line.split(", "):
                names.append(entry.partition(":")[2].strip())
    if not_after is None or sha256 is None:
        return None
    return {"not_after": not_after.isoformat(), "names": names, "sha256": sha256}
