"""Preflight of the gateway's controller files (pure: no pyinfra): client key files, and a
given certificate and key that belong together and have not expired. One line per problem,
naming the key and the fix."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from llmhost.gateway.config import key_hash
from llmhost.secret_files import KEYGEN, read_secret, secret_problem
from llmhost.settings import Settings


def problems(settings: Settings, now: datetime | None = None) -> list[str]:
    """Every problem with the gateway's data that only the controller's files show."""
    found = _client_files(settings)
    if settings.tls_cert_file and settings.tls_key_file:
        found += _tls_files(settings.tls_cert_file, settings.tls_key_file, now or datetime.now(UTC))
    return found


def _client_files(settings: Settings) -> list[str]:
    found, seen = [], {}
    for name, client in settings.clients.items():
        path = client.key_file
        if not path:
            continue
        problem = secret_problem(path, f"write one: {KEYGEN}")
        if problem:
            found.append(f"llmhost_gateway_clients[{name!r}] {problem}")
            continue
        digest = key_hash(read_secret(path))
        if digest in seen:
            found.append(
                f"llmhost_gateway_clients: {seen[digest]!r} and {name!r} have the same key; the "
                "access log could not tell them apart: give each client its own key file"
            )
        seen[digest] = name
    return found


def _tls_files(cert_path: str, key_path: str, now: datetime) -> list[str]:
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except (OSError, ValueError) as e:
        return [
            f"llmhost_tls_cert_file {cert_path!r}: not a PEM certificate on the controller "
            f"({type(e).__name__}); point it at the certificate chain, leaf first"
        ]
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        return [
            f"llmhost_tls_key_file {key_path!r}: not an unencrypted PEM private key on the "
            f"controller ({type(e).__name__}); point it at the certificate's key"
        ]
    found = []
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != cert.public_key().public_bytes(der, public):
        found.append(
            f"llmhost_tls_key_file {key_path!r} is not the key of llmhost_tls_cert_file "
            f"{cert_path!r}; give the key the certificate was issued for"
        )
    if cert.not_valid_after_utc <= now:
        found.append(
            f"llmhost_tls_cert_file {cert_path!r} expired on {cert.not_valid_after_utc:%F}; "
            "renew it, or unset both llmhost_tls_* files for a self-signed one"
        )
    return found
