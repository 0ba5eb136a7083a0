"""Services: units and env files from templates, then a health-gated switch, one at a time,
each rolled back to its last good release if it does not come up; then old releases pruned."""

from __future__ import annotations

from pyinfra.api import deploy

from llmhost.checked import Checked
from llmhost.layout import DEVICES_UNIT, MODEL_MARKER, UNIT_DIR, UNIT_PREFIX, VENV_STAMP, Layout
from llmhost.operations import paths, secrets, services, snapshots
from llmhost.render import render
from llmhost.secret_files import read_secret
from llmhost.service import units
from llmhost.settings import ServiceSpec, Settings

# The phase's name in pyinfra's output (and in the deploy's phase times).
PHASE = "Services: units and health-gated start"


@deploy(PHASE)
def start_services(settings: Settings, checked: Checked) -> None:
    # Its files go to directories that exist: the system phase made config_dir, systemd's is
    # there.
    layout = Layout(settings)
    plan = checked.applied
    _write_api_key(settings, layout, checked, {"dest": layout.plan, "content": plan.to_json()})
    if settings.gpu:
        # Pulled in by the services' units (Wants=); their switch's daemon-reload loads it.
        checked.files(
            f"Unit {DEVICES_UNIT} (NVIDIA device nodes before the services)",
            [{"dest": layout.devices_unit_path, "content": units.devices_unit()}],
        )
    # Units no service runs any more (replicas removed, or a replica 1 of the earlier
    # ``<name>-1`` naming) go first: their ports and GPU memory may be the new units'.
    services.retired(
        name="Stop and remove units of replicas no longer configured",
        prefix=UNIT_PREFIX,
        services=[svc.name for svc in settings.services],
        keep=[layout.unit_name(svc) for svc in settings.instances],
        unit_dir=UNIT_DIR,
        env_dir=layout.env_dir,
        good_dir=layout.good_root,
    )
    # In the configured order, replicas one at a time: each instance measures free GPU memory
    # when it starts, a failed switch stops the deploy before the next unit is touched, and a
    # service's other replicas serve meanwhile. The units carry the same order for systemd
    # (After=/Wants= the previous one) for boots.
    for svc in settings.instances:
        _switch(settings, layout, checked, svc)
    _prune(settings, layout)


def _write_api_key(
    settings: Settings, layout: Layout, checked: Checked, plan: paths.FileEntry
) -> None:
    """The API key (the given one, or generated on the host once), with the applied plan."""
    if not settings.api_key_file:
        secrets.generated_api_key(
            name="API key (generated once, 0600)", path=layout.api_key_env, user=settings.user
        )
        checked.files("The applied VRAM plan", [plan])
        return
    key = read_secret(settings.api_key_file)
    checked.files(
        "The applied VRAM plan; the API key (0600)",
        [
            plan,
            {"dest": layout.api_key_env, "content": f"VLLM_API_KEY={key}\n",
             "user": settings.user, "group": settings.user, "mode": "600"},
        ],
    )  # fmt: skip


def _switch(settings: Settings, layout: Layout, checked: Checked, svc: ServiceSpec) -> None:
    """The service's unit and env file, then its health-gated (re)start with rollback."""
    ctx = units.context(settings, svc, checked.metas[svc.service_name], checked.plan)
    checked.files(
        f"Unit {layout.unit_name(svc)}; environment of {svc.name} (0600)",
        [
            {"dest": layout.unit_path(svc), "content": render("service/vllm.service.j2", ctx)},
            {"dest": layout.env_path(svc), "content": render("service/vllm.env.j2", ctx),
             "user": settings.user, "group": settings.user, "mode": "600"},
        ],
    )  # fmt: skip
    services.healthy(
        name=f"Start {layout.unit_name(svc)} and wait for /health",
        unit=layout.unit_name(svc),
        health_url=layout.health_url(svc),
        timeout_s=settings.health_timeout_s,
        good_dir=layout.good_dir(svc),
        release_files=[layout.unit_path(svc), layout.env_path(svc)],
        # What it runs: restarted when one is newer than its process (this run wrote it, or a
        # stopped deploy did without restarting it).
        sources=[
            layout.release_stamp,
            layout.model_marker(svc),
            layout.unit_path(svc),
            layout.env_path(svc),
            layout.api_key_env,
        ],
    )


def _prune(settings: Settings, layout: Layout) -> None:
    """Every service is healthy on what this run planned: keep that and the previous one."""
    snapshots.pruned(
        name=f"Prune releases in {layout.releases_dir}",
        root=layout.releases_dir,
        keep=[layout.release_name],
        marker=VENV_STAMP,
        unmarked=True,
    )
    snapshots.pruned(
        name=f"Prune model snapshots in {settings.model_dir}",
        root=settings.model_dir,
        keep=[svc.model.dirname for svc in settings.services],
        marker=MODEL_MARKER,
        spare=len(settings.services),
    )
