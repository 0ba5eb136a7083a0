"""Runs ON a host for ``llmhost status``: the applied plan, each unit's systemd state and RSS,
then Prometheus's answers to the status queries, or (monitoring off) the services' raw
``/metrics`` and nvidia-smi's CSV. One JSON document on stdout.

Standard library only, Python >= 3.8 (``llmhost.remote.run`` sends its source with ``python3 -c``):
Prometheus and the services listen on the host's loopback, so the requests start there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

PROPS = ("ActiveState", "SubState", "NRestarts", "MainPID", "ControlGroup")
CGROUP_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd")
# The services and Prometheus are local: never through a proxy the environment names.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, timeout: float = 10.0) -> str:
    with HTTP.open(url, timeout=timeout) as response:
        return response.read().decode(errors="replace")


def _pids(cgroup: str) -> list[int]:
    for root in CGROUP_ROOTS:
        base = root + cgroup
        if not cgroup or not os.path.isdir(base):
            continue
        pids = set()
        for dirpath, _dirs, files in os.walk(base):
            if "cgroup.procs" in files:
                with open(os.path.join(dirpath, "cgroup.procs"), encoding="ascii") as f:
                    pids.update(int(p) for p in f.read().split())
        return sorted(pids)
    return []


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def unit(name: str) -> dict[str, Any]:
    args = ["systemctl", "show", *(f"-p{p}" for p in PROPS), name]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    props: dict[str, Any] = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    props["pids"] = _pids(props.get("ControlGroup", ""))
    props["rss_bytes"] = _rss(props["pids"])
    return props


def query(prometheus: str, expr: str) -> dict[str, Any]:
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        return json.loads(_get(url))
    except (urllib.error.URLError, OSError, ValueError) as e:
        return {"status": "error", "error": f"{type(e).__name__}: {getattr(e, 'reason', e)}"}


def metrics(url: str) -> dict[str, Any]:
    try:
        return {"text": _get(url)}
    except (urllib.error.URLError, OSError) as e:
        return {"error": f"{type(e).__name__}: {getattr(e, 'reason', e)}"}


def smi(commands: dict[str, list[str]]) -> dict[str, Any]:
    found = {}
    for key, argv in commands.items():
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            found[key] = {"rc": result.returncode, "out": result.stdout, "err": result.stderr}
        except (OSError, subprocess.TimeoutExpired) as e:
            found[key] = {"rc": -1, "out": "", "err": str(e)}
    return found


def main(args: dict[str, Any]) -> dict[str, Any]:
    """``plan``: the applied plan's path; ``units``: service -> unit; then ``prometheus`` and
    ``queries`` (key -> PromQL), or ``metrics`` (service -> /metrics URL) and ``smi``."""
    try:
        with open(args["plan"], encoding="utf-8") as f:
            plan: str | None = f.read()
    except OSError:
        plan = None
    answer: dict[str, Any] = {
        "plan": plan,
        "units": {svc: unit(name) for svc, name in args["units"].items()},
    }
    if args.get("prometheus"):
        answer["queries"] = {
            key: query(args["prometheus"], expr) for key, expr in args["queries"].items()
        }
    else:
        answer["metrics"] = {svc: metrics(url) for svc, url in args.get("metrics", {}).items()}
        answer["smi"] = smi(args.get("smi", {}))
    return answer


if __name__ == "__main__":
    json.dump(main(json.loads(sys.argv[1])), sys.stdout)
