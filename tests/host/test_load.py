"""Concurrent load smoke: llmhost_load_requests chat completions to every service at once."""

from __future__ import annotations

from targets import HostTarget, fail_on

from llmhost.checks import journal_problems, summarise_load


def test_load(target: HostTarget, request_timeout: float, report: list[str]) -> None:
    services = target.services()
    requests = [
        {
            "service": svc.name,
            "url": svc.url("/v1/chat/completions"),
            "key_file": target.api_key_file,
            "body": svc.chat_body(),
        }
        for svc in services
    ]
    n = target.settings.load_requests
    # Restarts before the load are test_systemd's to report, not this test's.
    before = {svc.name: svc.show()["NRestarts"] for svc in services}
    summaries = summarise_load(
        target.probe("load", requests=requests, n=n, timeout=request_timeout)
    )
    report.extend(summary.line(target.name) for summary in summaries.values())

    problems = []
    for svc in services:
        failures = summaries[svc.name].failures
        if failures:
            problems.append(
                f"{svc.where}: {len(failures)} of {n} concurrent requests failed: "
                + ", ".join(sorted(set(failures)))
            )
        restarts = int(svc.show()["NRestarts"]) - int(before[svc.name])
        if restarts:
            problems.append(f"{svc.where}: restarted {restarts} time(s) under load")
        oom = journal_problems(svc.journal())
        if oom:
            problems.append(f"{svc.where}: memory errors under load: " + " | ".join(oom[:3]))
    fail_on(problems)
