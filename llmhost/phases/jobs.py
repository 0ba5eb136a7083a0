"""Background jobs: the release venv's install and the hub downloads, waited for together
before any service starts on them."""

from __future__ import annotations

from pyinfra.api import deploy

from llmhost.layout import Layout
from llmhost.operations import jobs
from llmhost.operations.models import fetch_unit
from llmhost.operations.venv import install_unit
from llmhost.phases.preflight import Preflight
from llmhost.settings import ModelSource, Settings

# The phase's name in pyinfra's output (and in the deploy's phase times).
PHASE = "Background jobs: venv install and model downloads"


@deploy(PHASE)
def await_jobs(settings: Settings, checked: Preflight) -> None:
    layout = Layout(settings)
    # What preflight found complete has no job to wait for.
    if not checked.marked(layout.release_stamp, layout.release_digest):
        _await_release(settings, layout)
    for svc in settings.services:
        if svc.model.source is not ModelSource.HUB:
            continue
        assert svc.model.repo and svc.model.revision
        if checked.marked(layout.model_marker(svc), svc.model.revision):
            continue
        dest = layout.model_dir(svc)
        jobs.finished(
            name=f"Wait for the model of {svc.name}: {svc.model.repo}@{svc.model.revision[:12]}",
            unit=fetch_unit(dest),
            done=layout.model_marker(svc),
            content=svc.model.revision,
            watch=dest,
            description=f"model {svc.model.repo}",
            # The weights are nearly all of it; the tokenizer and configs are megabytes.
            expected_bytes=checked.metas[svc.name].weights_bytes,
            timeout_s=settings.job_timeout_s,
        )


def _await_release(settings: Settings, layout: Layout) -> None:
    jobs.finished(
        name=f"Wait for {' '.join(layout.packages)} in {layout.release}",
        unit=install_unit(layout.release),
        done=layout.release_stamp,
        content=layout.release_digest,
        watch=layout.release,
        description=settings.vllm_package,
        timeout_s=settings.job_timeout_s,
    )
