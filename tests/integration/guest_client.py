"""Runs on the guest (``llmhost.remote.run``): completions against one service until STOP exists
(or LIMIT_S seconds), then the counts as JSON. The key is read from the deploy's 0600 file
(or a gateway client's key file), never passed around; CAFILE: the gateway's certificate.

    python3 guest_client.py URL MODEL KEY_FILE STOP LIMIT_S [CAFILE]
"""

import json
import os
import ssl
import sys
import time
import urllib.request


def main(url: str, model: str, key_file: str, stop: str, limit: str, cafile: str = "") -> None:
    with open(key_file) as f:
        key = f.read().strip().removeprefix("VLLM_API_KEY=")
    tls = ssl.create_default_context(cafile=cafile) if cafile else None
    http = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=tls)
    )
    body = json.dumps({"model": model, "prompt": "def", "max_tokens": 4}).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    ok, errors, start = 0, [], time.monotonic()
    while not os.path.exists(stop) and time.monotonic() - start < float(limit):
        try:
            with http.open(urllib.request.Request(url, body, headers), timeout=30) as r:
                r.read()
            ok += 1
        except Exception as e:
            errors.append(str(e)[:200])
        # One a second: a steady client, not a load test. Saturating the served instance's core
        # (the lab pins each to one) has stalled the other's start in sched_setaffinity.
        time.sleep(1.0)
    seconds = round(time.monotonic() - start, 1)
    print(json.dumps({"ok": ok, "failed": len(errors), "errors": errors[:5], "seconds": seconds}))


if __name__ == "__main__":
    main(*sys.argv[1:])
