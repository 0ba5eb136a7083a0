"""llmhost.applied_plan: what the deploy writes to the host is what the checks read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmhost.applied_plan import AppliedPlan, AppliedPlanError
from llmhost.plan.catalogue import resolve
from llmhost.plan.planner import plan_services
from llmhost.settings import group_settings

ROOT = Path(__file__).resolve().parents[2]
GB = 10**9
WHERE = "gpu-01: /etc/llmhost/plan.json"


@pytest.fixture(scope="module")
def applied() -> AppliedPlan:
    settings = group_settings(ROOT, "prod")
    metas = {svc.name: resolve(svc.model) for svc in settings.services}
    plan = plan_services(settings, 80 * GB, metas)
    return AppliedPlan.of(settings, plan, 80 * GB)


def test_round_trip_keeps_every_field(applied: AppliedPlan) -> None:
    again = AppliedPlan.from_json(applied.to_json(), WHERE)
    assert again == applied
    assert list(again.services) == ["coder", "general"]
    coder = again.services["coder"]
    assert (coder.unit, coder.port, coder.bind_host) == ("llmhost-coder.service", 8001, "127.0.0.1")
    assert again.gpu_fraction == pytest.approx(
        sum(svc.gpu_memory_utilization or 0 for svc in applied.services.values())
    )
    assert 0 < again.gpu_fraction <= applied.gpu_memory_cap


@pytest.mark.parametrize(
    ("damage", "where_in_doc"),
    [
        (lambda d: d["services"]["coder"].pop("kv_tokens"), "services.coder.kv_tokens"),
        (lambda d: d.update(gpu="maybe"), "gpu"),
        (lambda d: d["services"]["general"].update(port="80a"), "services.general.port"),
        (lambda d: d.update(extra=1), "extra"),
    ],
)
def test_a_damaged_plan_names_the_file_the_field_and_the_fix(
    applied: AppliedPlan, damage, where_in_doc: str
) -> None:
    doc = json.loads(applied.to_json())
    damage(doc)
    with pytest.raises(AppliedPlanError) as e:
        AppliedPlan.from_json(json.dumps(doc), WHERE)
    assert str(e.value).startswith(f"{WHERE}: not a plan the deploy writes ({where_in_doc}: ")
    assert str(e.value).endswith("re-run the deploy to rewrite it")


def test_not_json_at_all() -> None:
    with pytest.raises(AppliedPlanError, match=rf"^{WHERE}: not a plan .*re-run the deploy"):
        AppliedPlan.from_json("{half", WHERE)
