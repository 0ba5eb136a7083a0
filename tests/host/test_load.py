"""Concurrent load smoke: llmhost_load_requests chat completions to every service at once,
straight to the services and again through the gateway (both from the host itself)."""

from __future__ import annotations

from typing import Any

import pytest
from targets import HostTarget, ServiceTarget, fail_on

from llmhost.observe.checks import journal_problems, summarise_load


def _requests(target: HostTarget, via: str) -> list[dict[str, Any]]:
    """One request per service, straight to it or through the gateway with a client's key."""
    layout = target.layout
    if via == "direct":
        return [
            {
                "service": svc.name,
                "url": svc.url("/v1/chat/completions"),
                "key_file": target.api_key_file,
                "body": svc.chat_body(),
            }
            for svc in target.services()
        ]
    s = target.settings
    # A key the host holds (one generated there); keys from controller files never go there.
    generated = s.gateway and sorted(n for n, path in target.check_clients.items() if not path)
    if not generated:
        pytest.skip(f"{target.name}: no gateway, or no client key generated on the host")
    # One load per model, whichever replica the gateway picks (its cap is the model's).
    models: dict[str, ServiceTarget] = {}
    for svc in target.services():
        models.setdefault(svc.spec.service_name, svc)
    return [
        {
            "service": name,
            "url": f"{layout.gateway_url}/v1/chat/completions",
            "key_file": layout.gateway_key(generated[0]),
            "cafile": layout.gateway_cert if s.gateway_tls and not s.tls_cert_file else None,
            "body": svc.chat_body(),
            # Beyond a model's cap the gateway answers 429 by design: load it up to the cap.
            "copies": min(s.load_requests, svc.spec.gateway_max_in_flight or s.load_requests),
        }
        for name, svc in models.items()
    ]


@pytest.mark.parametrize("via", ["direct", "gateway"])
def test_load(target: HostTarget, via: str, request_timeout: float, report: list[str]) -> None:
    services = target.services()
    requests = _requests(target, via)
    sent = {r["service"]: r.get("copies", target.settings.load_requests) for r in requests}
    # Restarts before the load are test_systemd's to report, not this test's.
    before = {svc.name: svc.show()["NRestarts"] for svc in services}
    summaries = summarise_load(
        target.probe(
            "load", requests=requests, n=target.settings.load_requests, timeout=request_timeout
        )
    )
    report.extend(f"{summary.line(target.name)} ({via})" for summary in summaries.values())

    problems = [
        f"{target.name}::{name}: {len(summary.failures)} of {sent[name]} concurrent requests "
        f"({via}) failed: " + ", ".join(sorted(set(summary.failures)))
        for name, summary in summaries.items()
        if summary.failures
    ]
    for svc in services:
        restarts = int(svc.show()["NRestarts"]) - int(before[svc.name])
        if restarts:
            problems.append(f"{svc.where}: restarted {restarts} time(s) under load")
        oom = journal_problems(svc.journal())
        if oom:
            problems.append(f"{svc.where}: memory errors under load: " + " | ".join(oom[:3]))
    fail_on(problems)
