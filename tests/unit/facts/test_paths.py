"""The path-state fact: its fixtures (pyinfra-testing style), and its script run for real on
this machine's own files, against what Python reads of them."""

import hashlib
import os
import subprocess
from pathlib import Path

from pyinfra_testing.facts import make_fact_tests

from llmhost.facts.paths import STATES, PathStates

HERE = Path(__file__).parent

TestPathStates = make_fact_tests("llmhost", "facts.paths.PathStates", HERE / "paths.PathStates")


def test_the_script_reads_real_paths(tmp_path: Path) -> None:
    secret = tmp_path / "a file with spaces"
    secret.write_text("VLLM_API_KEY=k\n")
    secret.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(secret)
    paths = [str(secret), str(tmp_path), str(tmp_path / "missing"), str(link)]
    out = subprocess.run(
        ["sh", "-c", STATES, "states", *paths], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    user = Path(secret).owner()
    group = Path(secret).group()
    mode = f"{os.stat(tmp_path).st_mode & 0o7777:o}"
    assert PathStates().process(out) == [
        {"type": "file", "mode": "600", "user": user, "group": group,
         "sha1": hashlib.sha1(b"VLLM_API_KEY=k\n").hexdigest()},
        {"type": "directory", "mode": mode, "user": user, "group": group, "sha1": None},
        None,
        {"type": "link", "mode": "777", "user": user, "group": group, "sha1": None},
    ]  # fmt: skip
