"""Services: units and env files from templates, then a health-gated start, one at a time."""

from __future__ import annotations

from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files

from llmhost import units
from llmhost.operations import models, secrets, services, venv
from llmhost.phases.preflight import Preflight, model_dest
from llmhost.settings import Settings


@deploy("Services: units and health-gated start")
def install_services(settings: Settings, checked: Preflight, restart: bool = False) -> None:
    key_path = f"{settings.config_dir}/api_key.env"
    if settings.api_key_file:
        with open(settings.api_key_file, encoding="utf-8") as f:
            key = f.read().strip()
        key_op = files.put(
            name="API key (0600)",
            src=StringIO(f"VLLM_API_KEY={key}\n"),
            dest=key_path,
            user=settings.user,
            group=settings.user,
            mode="600",
        )
    else:
        key_op = secrets.generated_api_key(
            name="API key (generated once, 0600)", path=key_path, user=settings.user
        )
    files.put(
        name="The applied VRAM plan",
        src=StringIO(units.plan_json(settings, checked.plan, checked.gpu_total_bytes)),
        dest=f"{settings.config_dir}/plan.json",
        mode="644",
    )
    # In the configured order: each instance measures free GPU memory when it starts.
    for svc in settings.services:
        ctx = units.context(settings, svc, checked.metas[svc.name], checked.plan)
        unit = files.template(
            name=f"Unit {units.unit_name(svc)}",
            src=str(units.TEMPLATES / "vllm.service.j2"),
            dest=units.unit_path(svc),
            mode="644",
            **ctx,
        )
        env = files.template(
            name=f"Environment of {svc.name} (0600)",
            src=str(units.TEMPLATES / "vllm.env.j2"),
            dest=units.env_path(settings, svc),
            user=settings.user,
            group=settings.user,
            mode="600",
            **ctx,
        )
        services.healthy(
            name=f"Start {units.unit_name(svc)} and wait for /health",
            unit=units.unit_name(svc),
            health_url=units.health_url(settings, svc),
            timeout_s=settings.health_timeout_s,
            restarted=restart or unit.will_change or env.will_change or key_op.will_change,
            # What it runs: a stopped deploy may have changed these without restarting it.
            sources=[
                f"{settings.venv}/{venv.STAMP}",
                f"{model_dest(settings, svc.name)}/{models.MARKER}",
                units.unit_path(svc),
                units.env_path(settings, svc),
                key_path,
            ],
        )
