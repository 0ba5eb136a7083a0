"""Runs ON the host: the distribution files its package indexes offer for one project.

Preflight sends this file's source with ``python3 -B -c SOURCE PROJECT`` (the fact
``PackageIndexFiles``) and reads one JSON document back::

    {"sources": ["https://pypi.org/simple/vllm/"], "files": ["vllm-0.33.0-...whl"], "errors": []}

The host's registries are what the venv install will use, and a fresh host has no pip yet, so
this reads pip's configuration itself, for the keys that decide where pip looks: ``index-url``,
``extra-index-url``, ``no-index``, ``find-links`` and ``cert``, from ``PIP_*`` variables first,
then the ``[install]`` and ``[global]`` sections of pip's global and user config files (the
later file wins, as in pip). It fetches each PEP 503 project page, or lists a local find-links
directory, and returns the file names linked there; the controller decides what they mean.
Standard library only, Python >= 3.8. Credentials in an index URL are never printed.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

PYPI = "https://pypi.org/simple"
# pip's global, then user config files; a later file overrides an earlier one.
CONFIG_FILES = (
    "/etc/xdg/pip/pip.conf",
    "/etc/pip.conf",
    "~/.pip/pip.conf",
    "~/.config/pip/pip.conf",
)
TIMEOUT_S = 30.0


def _config() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    files = [os.path.expanduser(f) for f in CONFIG_FILES]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(os.environ["PIP_CONFIG_FILE"])
    parser.read(files)
    return parser


def option(parser: configparser.ConfigParser, key: str, default: str = "") -> str:
    """One pip option: ``PIP_<KEY>`` overrides the [install] section, which overrides [global]."""
    env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
    if env is not None:
        return env
    for section in ("install", "global"):
        if parser.has_option(section, key):
            return parser.get(section, key)
    return default


def shown(url: str) -> str:
    """``url`` without its user and password (an index URL may carry a token)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _linked(html: str) -> list[str]:
    """The file names a PEP 503 page (or a find-links page) links to."""
    hrefs = re.findall(r"""href\s*=\s*["']([^"']+)["']""", html, flags=re.IGNORECASE)
    return [urllib.parse.unquote(h.split("#")[0].rstrip("/").rsplit("/", 1)[-1]) for h in hrefs]


def _local(path: str) -> list[str]:
    if not os.path.isdir(path):
        # pip skips a local index or find-links location that does not exist.
        return []
    names = os.listdir(path)
    if "index.html" in names:
        with open(os.path.join(path, "index.html"), encoding="utf-8", errors="replace") as f:
            names += _linked(f.read())
    return names


def _fetch(url: str, context: ssl.SSLContext) -> list[str]:
    if url.startswith("file:"):
        return _local(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    if "://" not in url:
        return _local(url)
    request = urllib.request.Request(url, headers={"Accept": "text/html"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as response:
            return _linked(response.read().decode("utf-8", errors="replace"))
    except urllib.error.HTTPError as e:
        if e.code == 404:
            # The index answered: it has no project of that name.
            return []
        raise


def pages(parser: configparser.ConfigParser, project: str) -> list[str]:
    """Where pip would look for ``project``: each index's project page, then find-links."""
    name = re.sub(r"[-_.]+", "-", project).lower()
    indexes = []
    if option(parser, "no-index").lower() not in ("1", "true", "yes", "on"):
        indexes = [option(parser, "index-url", PYPI), *option(parser, "extra-index-url").split()]
    return [f"{url.rstrip('/')}/{name}/" for url in indexes] + option(parser, "find-links").split()


def index_files(project: str) -> dict[str, Any]:
    parser = _config()
    context = ssl.create_default_context(cafile=option(parser, "cert") or None)
    sources: list[str] = []
    files: set[str] = set()
    errors: list[str] = []
    for url in pages(parser, project):
        sources.append(shown(url))
        try:
            files.update(_fetch(url, context))
        except Exception as e:
            # Any failure of one source is reported, not raised: the others may still answer.
            errors.append(f"{shown(url)}: {type(e).__name__}: {getattr(e, 'reason', e)}")
    return {"sources": sources, "files": sorted(files), "errors": errors}


if __name__ == "__main__":
    json.dump(index_files(sys.argv[1]), sys.stdout)
