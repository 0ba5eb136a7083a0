"""Runs on the guest (``llmhost.remote.run``): kill -9 one process of a unit, then record what
systemd
and /health show, at every change, until a new main process answers /health with 200.

    python3 guest_watch.py UNIT HEALTH_URL VICTIM_PID LIMIT_S   # prints the timeline as JSON
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

PROPS = ["-p", "MainPID", "-p", "NRestarts", "-p", "ActiveState", "-p", "Result"]
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def state(unit: str, url: str) -> dict:
    out = subprocess.run(["systemctl", "show", *PROPS, unit], capture_output=True, text=True)
    s: dict = dict(line.split("=", 1) for line in out.stdout.splitlines())
    try:
        s["health"] = HTTP.open(url, timeout=2).status
    except urllib.error.HTTPError as e:
        s["health"] = e.code
    except OSError:
        s["health"] = 0
    return s


def main(unit: str, url: str, victim: str, limit: str) -> None:
    old = state(unit, url)["MainPID"]
    os.kill(int(victim), 9)
    start = time.monotonic()
    timeline, last = [], None
    while time.monotonic() - start < float(limit):
        s = state(unit, url)
        if s != last:
            timeline.append([round(time.monotonic() - start, 1), s])
            last = s
        if s["MainPID"] not in ("0", old) and s["health"] == 200:
            break
        time.sleep(0.25)
    print(json.dumps(timeline))


if __name__ == "__main__":
    main(*sys.argv[1:])
