"""Runs on the guest (``llmhost.remote.run``): where each secret shows up: process command lines,
the
journal, and files under the given directories (not crossing into other mounts). The secrets
come on stdin as JSON {name: value}, never on a command line, and only their names are printed.

    python3 guest_scan.py DIR...   # prints {"cmdlines": ..., "journal": ..., "files": ...}
"""

import json
import os
import pwd
import stat
import subprocess
import sys


def found(secrets: dict[str, bytes], data: bytes) -> list[str]:
    return sorted(name for name, value in secrets.items() if value in data)


def file_hits(secrets: dict[str, bytes], path: str) -> list[str]:
    longest = max(map(len, secrets.values()))
    hits, tail = set(), b""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            hits.update(found(secrets, tail + chunk))
            tail = chunk[-longest:]
    return sorted(hits)


def cmdlines(secrets: dict[str, bytes]) -> dict[str, list[str]]:
    hits = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if names := found(secrets, f.read()):
                    hits[pid] = names
        except OSError:
            continue
    return hits


def files(secrets: dict[str, bytes], tops: list[str]) -> dict[str, dict]:
    hits = {}
    for top in tops:
        device = os.stat(top).st_dev
        for root, dirs, names in os.walk(top):
            dirs[:] = [d for d in dirs if os.lstat(os.path.join(root, d)).st_dev == device]
            for name in names:
                path = os.path.join(root, name)
                try:
                    st = os.lstat(path)
                    names_found = file_hits(secrets, path) if stat.S_ISREG(st.st_mode) else []
                except OSError:
                    continue
                if names_found:
                    owner = pwd.getpwuid(st.st_uid).pw_name
                    hits[path] = {
                        "secrets": names_found,
                        "mode": st.st_mode & 0o777,
                        "owner": owner,
                    }
    return hits


def main(*tops: str) -> None:
    secrets = {name: value.encode() for name, value in json.load(sys.stdin).items()}
    journal = subprocess.run(["journalctl", "-o", "cat", "--no-pager"], capture_output=True).stdout
    print(
        json.dumps(
            {
                "cmdlines": cmdlines(secrets),
                "journal": found(secrets, journal),
                "files": files(secrets, list(tops)),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
