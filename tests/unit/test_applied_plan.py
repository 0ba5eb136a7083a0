"""llmhost.applied_plan: what the deploy writes to the host is what the checks read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmhost.applied_plan import AppliedPlan, AppliedPlanError
from llmhost.plan.catalogue import resolve
from llmhost.plan.planner import Gpu, plan_services
from llmhost.settings import Settings, group_settings

ROOT = Path(__file__).resolve().parents[2]
GB = 10**9
WHERE = "gpu-01: /etc/llmhost/plan.json"


@pytest.fixture(scope="module")
def applied() -> AppliedPlan:
    settings = group_settings(ROOT, "prod")
    metas = {svc.name: resolve(svc.model) for svc in settings.services}
    plan = plan_services(settings, 80 * GB, metas)
    return AppliedPlan.of(settings, plan)


def test_round_trip_keeps_every_field(applied: AppliedPlan) -> None:
    again = AppliedPlan.from_json(applied.to_json(), WHERE)
    assert again == applied
    assert list(again.services) == ["coder", "general"]
    coder = again.services["coder"]
    assert (coder.unit, coder.port, coder.bind_host) == ("llmhost-coder.service", 8001, "127.0.0.1")
    assert [(g.index, g.total_bytes) for g in again.gpus] == [(0, 80 * GB)]
    assert again.gpu_fraction(0) == pytest.approx(
        sum(svc.gpu_memory_utilization or 0 for svc in applied.services.values())
    )
    assert 0 < again.gpu_fraction(0) <= applied.gpu_memory_cap
    assert again.gpu_planned_bytes(0) == pytest.approx(again.gpu_fraction(0) * 80 * GB)


def test_each_gpu_and_the_units_on_it() -> None:
    """Two 80 GB cards, general in two replicas: coder alone on GPU 0, the replicas on GPU 1."""
    overrides = {"general": {"replicas": 2}}
    settings = Settings.from_host_data(
        {"llmhost_stack": "primary", "llmhost_service_overrides": overrides}
    )
    metas = {svc.name: resolve(svc.model) for svc in settings.services}
    gpus = [Gpu(index=i, total_bytes=80 * GB, uuid=f"GPU-{i}") for i in (0, 1)]
    plan = AppliedPlan.of(settings, plan_services(settings, gpus, metas))
    again = AppliedPlan.from_json(plan.to_json(), WHERE)
    assert [(g.index, g.uuid, g.total_bytes) for g in again.gpus] == [
        (0, "GPU-0", 80 * GB),
        (1, "GPU-1", 80 * GB),
    ]
    assert [[s.name for s in again.on_gpu(i)] for i in (0, 1)] == [
        ["coder"],
        ["general", "general-2"],
    ]
    assert again.used_gpus() == again.gpus
    for gpu in again.gpus:
        assert again.gpu_fraction(gpu.index) <= settings.gpu_memory_cap
    coder = again.services["coder"]
    assert again.service_planned_bytes("coder") == pytest.approx(
        (coder.gpu_memory_utilization or 0) * 80 * GB
    )


def test_a_plan_written_for_one_gpu_still_reads(applied: AppliedPlan) -> None:
    """Before several GPUs: ``gpu_total_bytes`` (GPU 0's), and the services without ``gpus``."""
    doc = json.loads(applied.to_json())
    del doc["gpus"]
    doc["gpu_total_bytes"] = 80 * GB
    for svc in doc["services"].values():
        del svc["gpus"]
    old = AppliedPlan.from_json(json.dumps(doc), WHERE)
    assert [(g.index, g.uuid, g.total_bytes) for g in old.gpus] == [(0, None, 80 * GB)]
    assert [s.gpus for s in old.services.values()] == [[0], [0]]
    assert old.gpu_fraction(0) == applied.gpu_fraction(0)
    doc.update(gpu=False, gpu_total_bytes=None)
    assert AppliedPlan.from_json(json.dumps(doc), WHERE).gpus == []


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
