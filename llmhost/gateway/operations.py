"""The gateway's moving parts on the host: client-key hashes, a self-signed certificate made
once, and a config that goes live only once ``haproxy -c`` accepts it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.facts.files import FileContents, Sha256File
from pyinfra.operations import files

from llmhost.facts.batch import fact
from llmhost.gateway.config import clients_map
from llmhost.gateway.facts import KeyHashes, TlsCertificate
from llmhost.settings import is_ip

# Run as: sh -c NEWKEYS newkeys DIR NAME...: a key per NAME, made here by Python's secrets, in a
# 0600 root file. The key is never on a command line or in the output.
NEWKEYS = """\
d=$1; shift; umask 077; mkdir -p "$d"
for n in "$@"; do
  python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "$d/.$n.tmp" &&
    mv "$d/.$n.tmp" "$d/$n"
done"""
# Run as: sh -c MAP map DIR MAP OWNER GIVEN_LINES NAME...: the map of hashes from the given
# lines and the generated keys' hashes, written whole, 0600, owned by OWNER.
MAP = """\
d=$1 map=$2 owner=$3 given=$4; shift 4; umask 077
{ printf '%s' "$given"
  for n in "$@"; do
    printf '%s %s\\n' "$(tr -d '\\n' < "$d/$n" | sha256sum | cut -d' ' -f1)" "$n"
  done
} | LC_ALL=C sort -k2 > "$map.tmp" && chown "$owner:$owner" "$map.tmp" && mv "$map.tmp" "$map"
"""
# Run as: sh -c SELFSIGNED selfsigned PEM CRT OWNER DAYS CN SAN: a new key and certificate made
# on the host (the key never leaves it), the pair in PEM for HAProxy, the certificate in CRT.
SELFSIGNED = """\
pem=$1 crt=$2 owner=$3 days=$4 cn=$5 san=$6; umask 077; t=$(mktemp -d "$pem.XXXXXX")
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$days" \\
  -subj "/CN=$cn" -addext "subjectAltName=$san" -keyout "$t/key" -out "$t/crt" 2>"$t/err" &&
  cat "$t/crt" "$t/key" > "$t/pem" && chown "$owner:$owner" "$t/pem" && chmod 644 "$t/crt" &&
  mv "$t/pem" "$pem" && mv "$t/crt" "$crt"; rc=$?; [ $rc = 0 ] || cat "$t/err" >&2
rm -rf "$t"; exit $rc"""
# Renewed this long before it expires (the post-deploy check fails inside the same margin).
RENEW_BEFORE = timedelta(days=30)


@operation()
def client_keys(
    keys_dir: str, map_path: str, owner: str, given: dict[str, str], generate: list[str]
):
    """
    The gateway's map of client-key hashes: given hashes, plus keys generated on the host once.

    + keys_dir: where generated keys live (0600 root, for the operator to hand out)
    + map_path: HAProxy's map, ``<sha256 hex> <client>`` per line (0600, ``owner``'s)
    + owner: the gateway's user
    + given: ``{client: sha256 hex}`` of keys from controller files (their keys stay there)
    + generate: clients whose key is made on the host, once

    A generated key that is no longer wanted (the client revoked, or given a file) is deleted,
    so the name gets a new key if it comes back.

    **Example:**

    .. code:: python

        gateway.client_keys(
            keys_dir="/etc/llmhost/gateway-keys", map_path="/etc/haproxy/llmhost/clients.map",
            owner="haproxy", given={"ci": "9f86d0..."}, generate=["alice"],
        )
    """
    have = fact(KeyHashes, keys_dir=keys_dir)
    stale = sorted(set(have) - set(generate))
    missing = [name for name in generate if name not in have]
    if stale:
        yield StringCommand("rm", "-f", *(QuoteString(f"{keys_dir}/{n}") for n in stale))
    if missing:
        yield StringCommand(
            "sh", "-c", QuoteString(NEWKEYS), "newkeys", QuoteString(keys_dir),
            *(QuoteString(n) for n in missing),
        )  # fmt: skip
        given_lines = clients_map(given)
        yield StringCommand(
            "sh", "-c", QuoteString(MAP), "map",
            *(QuoteString(v) for v in (keys_dir, map_path, owner, given_lines)),
            *(QuoteString(n) for n in generate),
        )  # fmt: skip
        return
    wanted = clients_map({**given, **{n: have[n] for n in generate}})
    current = fact(FileContents, path=map_path)
    if current is not None and "".join(f"{line}\n" for line in current) == wanted:
        host.noop(f"{map_path} already holds the hashes of {len(given) + len(generate)} key(s)")
        return
    yield from files.put._inner(
        src=StringIO(wanted), dest=map_path, user=owner, group=owner, mode="600"
    )


@operation()
def self_signed(pem: str, cert: str, owner: str, names: list[str], days: int = 825):
    """
    A self-signed certificate for ``names`` made on the host once, remade only when its names
    change or it is within ``RENEW_BEFORE`` of expiring.

    + pem: certificate and key in one file, as HAProxy reads it (0600, ``owner``'s)
    + cert: the certificate alone (0644), for clients to trust
    + owner: the gateway's user
    + names: DNS names and IP addresses; the first is also the subject's CN
    + days: validity

    **Example:**

    .. code:: python

        gateway.self_signed(pem="/etc/haproxy/llmhost/tls.pem", cert=".../tls.crt",
                            owner="haproxy", names=["gpu-01", "localhost", "127.0.0.1"])
    """
    found = fact(TlsCertificate, path=cert)
    left = datetime.fromisoformat(found["not_after"]) - datetime.now(UTC) if found else None
    fresh = left is not None and left > RENEW_BEFORE
    if (
        fresh
        and found is not None
        and found["names"] == names
        and fact(FileContents, path=pem) is not None
    ):
        host.noop(f"{cert} already certifies {', '.join(names)} until {found['not_after'][:10]}")
        return
    san = ",".join(f"IP:{n}" if is_ip(n) else f"DNS:{n}" for n in names)
    yield StringCommand(
        "sh", "-c", QuoteString(SELFSIGNED), "selfsigned",
        *(QuoteString(str(v)) for v in (pem, cert, owner, days, names[0], san)),
    )  # fmt: skip


@operation()
def checked_config(candidate: str, live: str, group: str):
    """
    Put ``candidate`` live as ``live`` only once ``haproxy -c`` accepts it, so a bad config
    never reaches the running gateway (the deploy fails with HAProxy's own message).

    + candidate: the rendered config
    + live: the config the gateway runs (0640 root, readable by ``group``)
    + group: the gateway's group

    **Example:**

    .. code:: python

        gateway.checked_config(candidate="/etc/haproxy/llmhost/haproxy.cfg.candidate",
                               live="/etc/haproxy/llmhost/haproxy.cfg", group="haproxy")
    """
    want = fact(Sha256File, path=candidate)
    if want is not None and want == fact(Sha256File, path=live):
        host.noop(f"{live} is already the checked config")
        return
    tmp = QuoteString(f"{live}.tmp")
    yield StringCommand(
        "haproxy -c -q -f", QuoteString(candidate),
        "&& install -m 640 -o root -g", QuoteString(group), QuoteString(candidate), tmp,
        "&& mv", tmp, QuoteString(live),
    )  # fmt: skip
