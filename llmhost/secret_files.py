"""The one rule for a secret the controller holds in a file (the services' API key, the HF
token, each gateway client's key): preflight, the gateway's rules and the deploy read it here."""

from __future__ import annotations

import os
from pathlib import Path

from llmhost.settings import Settings

# Shorter is a placeholder, not a key; 32 hex characters is what the README's command writes.
MIN_KEY_CHARS = 16
KEYGEN = "`openssl rand -hex 32 > FILE`"


def read_secret(path: str) -> str:
    """The secret in ``path`` without its surrounding whitespace; empty when there is none."""
    file = Path(path)
    return file.read_text(encoding="utf-8").strip() if file.is_file() else ""


def secret_problem(path: str, fix: str, min_chars: int = MIN_KEY_CHARS) -> str | None:
    """Why ``path`` cannot hold a secret, or None. ``fix`` says how to get one when the file is
    missing. A secret goes into an env file line or a map: whitespace in it would start another."""
    secret = read_secret(path)
    if not secret:
        return f"{path!r}: no such file on the controller, or it is empty; {fix}"
    if len(secret.split()) != 1 or not secret.isprintable():
        return (
            f"{path!r}: holds more than one word or a control character; write the secret "
            "alone, on one line"
        )
    if len(secret) < min_chars:
        return (
            f"{path!r}: {len(secret)} characters is a placeholder, not a secret; write at least "
            f"{min_chars} random ones with {KEYGEN}"
        )
    return None


def hf_token(settings: Settings) -> str | None:
    """The controller's HF token: the file named in data, else $HF_TOKEN."""
    if settings.hf_token_file:
        return read_secret(settings.hf_token_file) or None
    return os.environ.get("HF_TOKEN") or None
