"""Models: one snapshot directory per service, pushed from the controller, or downloaded by a
background job while the venv installs."""

from __future__ import annotations

from pyinfra.api import deploy

from llmhost.checked import Checked
from llmhost.install.jobs import await_venv, pending_downloads
from llmhost.layout import Layout, fetch_job, install_job
from llmhost.operations import models, venv
from llmhost.secret_files import hf_token
from llmhost.settings import ModelSource, Settings

# The phase's name in pyinfra's output (and in the deploy's phase times).
PHASE = "Models"


@deploy(PHASE)
def install_models(settings: Settings, checked: Checked) -> None:
    layout = Layout(settings)
    hub = pending_downloads(settings, checked)
    if hub:
        _hub_client(settings, layout, checked)
    token = hf_token(settings) if hub else None
    if token:
        checked.files(
            "HF token (0600)",
            [
                {"dest": layout.hf_token, "content": token + "\n", "user": settings.user,
                 "group": settings.user, "mode": "600"},
            ],
        )  # fmt: skip
    for svc in settings.services:
        dest = layout.model_dir(svc)
        if svc.model.source is ModelSource.LOCAL:
            assert svc.model.path
            marker = layout.model_marker(svc)
            if not checked.marked(marker, models.local_digest(svc.model.path, marker)):
                models.local(
                    name=f"Model for {svc.name}: {dest}",
                    src=svc.model.path,
                    dest=dest,
                    marker=marker,
                )
        elif svc in hub:
            assert svc.model.repo and svc.model.revision
            models.hub(
                name=f"Model for {svc.name}: {svc.model.repo}@{svc.model.revision[:12]}",
                repo=svc.model.repo,
                revision=svc.model.revision,
                dest=dest,
                marker=layout.model_marker(svc),
                unit=fetch_job(dest),
                tools=layout.tools,
                user=settings.user,
                token_file=layout.hf_token if token else None,
                endpoint=settings.hf_endpoint,
            )


def _hub_client(settings: Settings, layout: Layout, checked: Checked) -> None:
    """The downloads' own small venv, ready before they start (seconds, not the release's
    minutes)."""
    if checked.marked(layout.tools_stamp, layout.tools_digest):
        return
    venv.pinned(
        name=f"Install {settings.hub_client} into {layout.tools}",
        path=layout.tools,
        packages=[settings.hub_client],
        unit=install_job(layout.tools),
        stamp=layout.tools_stamp,
        python=settings.python,
        find_links=layout.wheelhouse,
        wheelhouse=settings.wheelhouse,
        pip_cache_dir=settings.pip_cache_dir,
        index=settings.pip_index,
        import_check="huggingface_hub",
    )
    await_venv(settings, [settings.hub_client], layout.tools, layout.tools_digest)
