"""Monitoring on the host: every target scraped and up, llmhost's rules loaded, and on GPU hosts
the GPU exporter's per-service memory agreeing with NVML's (nvidia-smi's) view.

Prometheus is asked over its HTTP API from the host itself (``llmhost.remote.agent http``): it
listens on the host's loopback. Skipped where ``llmhost_monitoring`` is not ``True``.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from targets import HostTarget, ServiceTarget, fail_on

from llmhost.monitoring import alerts, gpu_exporter, scrape
from llmhost.observe.checks import apps_of, exporter_gpu_problems, gib


def _require_monitoring(target: HostTarget) -> None:
    if target.settings.monitoring is not True:
        pytest.skip(f"{target.name}: llmhost_monitoring is {target.settings.monitoring!r}")


def _api(target: HostTarget, path: str, **params: str) -> Any:
    url = f"{target.layout.prometheus_url}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    answer = target.probe("http", url=url, max_body=1_000_000, timeout=10)
    if answer["status"] != 200:
        pytest.fail(
            f"{target.name}: Prometheus {path} answered {answer['status']} "
            f"{answer['error'] or answer['body'][:300]}",
            pytrace=False,
        )
    return json.loads(answer["body"])["data"]


def _down(target: HostTarget) -> list[str]:
    up = {
        (r["metric"]["job"], r["metric"]["instance"]): r["value"][1]
        for r in _api(target, "/api/v1/query", query="up")["result"]
    }
    expected = scrape.targets(target.settings, target.plan, target.name)
    problems = [
        f"{target.name}: Prometheus does not scrape {t.job} at {t.address}"
        for t in expected
        if (t.job, t.address) not in up
    ]
    return problems + [
        f"{target.name}: target {job} at {instance} is down (up == 0)"
        for (job, instance), value in sorted(up.items())
        if value != "1"
    ]


def test_targets_up(target: HostTarget) -> None:
    _require_monitoring(target)
    # Just after a deploy's reload a target may not have been scraped yet: a few intervals.
    deadline = time.monotonic() + 3 * target.settings.monitoring_interval_s + 10
    while (problems := _down(target)) and time.monotonic() < deadline:
        time.sleep(1)
    fail_on(problems)


def test_rules_loaded(target: HostTarget) -> None:
    _require_monitoring(target)
    groups = {g["name"]: g for g in _api(target, "/api/v1/rules")["groups"]}
    if alerts.GROUP not in groups:
        fail_on([f"{target.name}: Prometheus has no rule group {alerts.GROUP!r}: {list(groups)}"])
    found = sorted(r["name"] for r in groups[alerts.GROUP]["rules"])
    found_targets = scrape.targets(target.settings, target.plan, target.name)
    doc = alerts.rules(target.settings, target.plan, found_targets)
    expected = sorted(r["alert"] for r in doc["groups"][0]["rules"])
    # Extra targets (the gateway's) add LLMTargetMissing rules: count names, not copies.
    assert set(found) == set(expected), f"{target.name}: rules loaded {found}, wanted {expected}"
    unhealthy = [r["name"] for r in groups[alerts.GROUP]["rules"] if r.get("health") == "err"]
    fail_on([f"{target.name}: rules failing to evaluate: {unhealthy}"] if unhealthy else [])


@pytest.mark.gpu
def test_gpu_exporter_agrees_with_nvml(
    service: ServiceTarget, gpu_tolerance: int, report: list[str]
) -> None:
    target = service.target
    _require_monitoring(target)
    if not target.settings.gpu:
        pytest.skip(f"{target.name}: llmhost_gpu is false, no GPU exporter")
    url = f"http://{target.layout.monitoring_address(target.settings.gpu_exporter_port)}/metrics"
    answer = target.probe("http", url=url, max_body=1_000_000, timeout=10)
    if answer["status"] != 200:
        fail_on([f"{target.name}: GPU exporter {url}: {answer['status']} {answer['error']}"])
    exported = [
        (s.labels, s.value)
        for family in text_string_to_metric_families(answer["body"])
        for s in family.samples
        if s.name == gpu_exporter.PROCESS_MEMORY and s.labels.get("service") == service.name
    ]
    apps = apps_of(target.compute_apps(), service.pids())
    report.append(
        f"{service.where}: GPU exporter {gib(sum(v for _, v in exported))}, nvidia-smi "
        f"{gib(sum(a['used_memory_bytes'] or 0 for a in apps))}"
    )
    fail_on(exporter_gpu_problems(service.where, exported, apps, target.gpus(), gpu_tolerance))
