"""Background jobs: the release venv's install and the hub downloads, waited for together
before any service starts on them."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import files

from llmhost.checked import Checked
from llmhost.layout import VENV_STAMP, Layout, fetch_job, install_job
from llmhost.operations import jobs
from llmhost.settings import ModelSource, ServiceSpec, Settings

# The phase's name in pyinfra's output (and in the deploy's phase times).
PHASE = "Background jobs: venv install and model downloads"


@deploy(PHASE)
def await_jobs(settings: Settings, checked: Checked) -> None:
    layout = Layout(settings)
    # What preflight found complete has no job to wait for.
    if not checked.marked(layout.release_stamp, layout.release_digest):
        await_venv(settings, layout.packages, layout.release, layout.release_digest)
    downloads = pending_downloads(settings, checked)
    for svc in downloads:
        assert svc.model.repo and svc.model.revision
        dest = layout.model_dir(svc)
        jobs.finished(
            name=f"Wait for the model of {svc.name}: {svc.model.repo}@{svc.model.revision[:12]}",
            unit=fetch_job(dest),
            done=layout.model_marker(svc),
            content=svc.model.revision,
            watch=dest,
            description=f"model {svc.model.repo}",
            # The weights are nearly all of it; the tokenizer and configs are megabytes.
            expected_bytes=checked.metas[svc.name].weights_bytes,
            timeout_s=settings.job_timeout_s,
        )
    # The HF token is needed on the host only while a download runs, and none does now: it is
    # not kept at rest (the models phase writes it again from the controller for the next one).
    # A deploy stopped before this point leaves it for the download still running.
    if downloads or checked.owned.get(layout.hf_token) is not None:
        files.file(
            name=f"Remove the HF token {layout.hf_token}: no download needs it",
            path=layout.hf_token,
            present=False,
        )


def pending_downloads(settings: Settings, checked: Checked) -> list[ServiceSpec]:
    """The hub services whose snapshot preflight did not find complete: the models phase starts
    their download jobs, this phase waits for them."""
    layout = Layout(settings)
    return [
        svc
        for svc in settings.services
        if svc.model.source is ModelSource.HUB
        # Preflight read the markers: a complete snapshot is not asked about again.
        and not checked.marked(layout.model_marker(svc), svc.model.revision or "")
    ]


def await_venv(settings: Settings, packages: list[str], path: str, digest: str) -> None:
    """Wait for the job installing ``packages`` into the venv at ``path`` (stamped ``digest``)."""
    jobs.finished(
        name=f"Wait for {' '.join(packages)} in {path}",
        unit=install_job(path),
        done=f"{path}/{VENV_STAMP}",
        content=digest,
        watch=path,
        description=packages[0].partition("==")[0],
        timeout_s=settings.job_timeout_s,
    )
