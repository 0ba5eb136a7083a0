"""The plan a deploy applied, as kept on the host (``Layout.plan``): one format, one codec.

The deploy writes it after preflight; the post-deploy checks, the gateway's model list, the alert
rules and ``llmhost status`` read it back, so they judge and route what was deployed, not what
the controller's data says today.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from llmhost.layout import unit_name
from llmhost.plan.planner import HostPlan
from llmhost.settings import Settings


class AppliedPlanError(ValueError):
    """The applied plan on the host is missing a field or is not what the deploy writes."""


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppliedService(_Doc):
    name: str
    unit: str
    port: int
    bind_host: str
    served_model_name: str
    max_model_len: int
    gpu_memory_utilization: float | None
    cpu_kv_cache_gib: int | None
    kv_tokens: int
    # GPU hosts: the GPUs (nvidia-smi indices) it runs on, split over them when several.
    # Defaults: what a plan written before there were several GPUs meant.
    gpus: list[int] = []
    tensor_parallel_size: int = 1
    # A replica's service (``llmhost-<service>-<n>``); None: the service's one unit.
    replica_of: str | None = None

    @property
    def service(self) -> str:
        """The service (the gateway's backend) this unit serves."""
        return self.replica_of or self.name


class AppliedGpu(_Doc):
    """One GPU the plan was made for; the units on it are those whose ``gpus`` name it."""

    index: int
    # nvidia-smi's UUID; None where the plan was made without one (an older plan).
    uuid: str | None = None
    # nvidia-smi's total, which the checks, alerts and status multiply the fractions by.
    total_bytes: int


class AppliedPlan(_Doc):
    gpu: bool
    gpu_memory_cap: float
    # GPU hosts: every GPU of the host, by index (those no unit uses too).
    gpus: list[AppliedGpu] = []
    # Each GPU's driver reservation the plan used (by index): the next deploy plans with it
    # while nvidia-smi's reading stays near it (preflight), so a second run plans the same.
    gpu_reserved_bytes: list[int] = []
    # Each unit (a service, or each of its replicas) in the configured order: the order they
    # start in.
    services: dict[str, AppliedService]

    @model_validator(mode="before")
    @classmethod
    def _one_gpu_before(cls, data: Any) -> Any:
        """A plan written before there were several GPUs: its ``gpu_total_bytes`` was GPU 0's,
        and every unit of a GPU host ran there."""
        if not isinstance(data, dict) or "gpu_total_bytes" not in data:
            return data
        doc = {k: v for k, v in data.items() if k != "gpu_total_bytes"}
        total = data["gpu_total_bytes"]
        doc.setdefault("gpus", [{"index": 0, "total_bytes": total}] if total else [])
        if doc.get("gpu") and isinstance(doc.get("services"), dict):
            doc["services"] = {
                name: {**svc, "gpus": svc.get("gpus") or [0]} if isinstance(svc, dict) else svc
                for name, svc in doc["services"].items()
            }
        return doc

    @classmethod
    def of(
        cls, settings: Settings, plan: HostPlan, gpu_reserved_bytes: list[int] | None = None
    ) -> AppliedPlan:
        """What the deploy applies to a host from its settings and the planner's verdict (and
        the GPUs' reservations it planned with)."""
        return cls(
            gpu=settings.gpu,
            gpu_memory_cap=settings.gpu_memory_cap,
            gpus=[
                AppliedGpu(index=g.index, uuid=g.uuid, total_bytes=g.total_bytes) for g in plan.gpus
            ],
            gpu_reserved_bytes=gpu_reserved_bytes or [],
            services={
                svc.name: AppliedService(
                    name=svc.name,
                    unit=unit_name(svc.name),
                    port=svc.port,
                    bind_host=settings.bind_host,
                    served_model_name=svc.served_model_name,
                    max_model_len=svc.max_model_len,
                    gpu_memory_utilization=plan.services[svc.name].gpu_memory_utilization,
                    cpu_kv_cache_gib=plan.services[svc.name].cpu_kv_cache_gib,
                    kv_tokens=plan.services[svc.name].kv_tokens,
                    gpus=list(plan.services[svc.name].gpus),
                    tensor_parallel_size=plan.services[svc.name].tensor_parallel_size,
                    replica_of=svc.replica_of,
                )
                for svc in settings.instances
            },
        )

    def by_service(self) -> dict[str, list[AppliedService]]:
        """Each service's units (its replicas), in order: what the gateway balances."""
        found: dict[str, list[AppliedService]] = {}
        for svc in self.services.values():
            found.setdefault(svc.service, []).append(svc)
        return found

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> AppliedPlan:
        """Read an applied plan; ``where`` (host and path) starts the error message."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as e:
            first = e.errors()[0]
            at = ".".join(str(part) for part in first["loc"]) or "document"
            raise AppliedPlanError(
                f"{where}: not a plan the deploy writes ({at}: {first['msg']}); "
                "re-run the deploy to rewrite it"
            ) from None

    def on_gpu(self, index: int) -> list[AppliedService]:
        """The units planned on GPU ``index`` (a tensor-parallel one is on each of its GPUs)."""
        return [svc for svc in self.services.values() if index in svc.gpus]

    def used_gpus(self) -> list[AppliedGpu]:
        """The GPUs some unit is planned on."""
        return [gpu for gpu in self.gpus if self.on_gpu(gpu.index)]

    def gpu_fraction(self, index: int) -> float:
        """The share of GPU ``index`` its units' --gpu-memory-utilization reserve together."""
        return sum(svc.gpu_memory_utilization or 0.0 for svc in self.on_gpu(index))

    def gpu_planned_bytes(self, index: int) -> float | None:
        """What GPU ``index``'s units may hold of it (None: no such GPU in the plan)."""
        total = next((g.total_bytes for g in self.gpus if g.index == index), None)
        return None if total is None else self.gpu_fraction(index) * total

    def service_planned_bytes(self, name: str) -> float | None:
        """What a GPU unit may hold over all its GPUs (its fraction is of each); None for a
        unit without a GPU share."""
        svc = self.services[name]
        if not self.gpu or not svc.gpu_memory_utilization:
            return None
        totals = {g.index: g.total_bytes for g in self.gpus}
        return sum(svc.gpu_memory_utilization * totals.get(i, 0) for i in svc.gpus)
