"""Models: one snapshot directory per service, pushed from the controller or downloaded."""

from __future__ import annotations

from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files

from llmhost.layout import Layout
from llmhost.operations import models
from llmhost.phases.preflight import hf_token
from llmhost.settings import ModelSource, Settings

# The phase's name in pyinfra's output (and in the deploy's phase times).
PHASE = "Models"


@deploy(PHASE)
def install_models(settings: Settings) -> None:
    layout = Layout(settings)
    token_file = None
    hub = [svc for svc in settings.services if svc.model.source is ModelSource.HUB]
    token = hf_token(settings) if hub else None
    if token:
        token_file = layout.hf_token
        files.put(
            name="HF token (0600)",
            src=StringIO(token + "\n"),
            dest=token_file,
            user=settings.user,
            group=settings.user,
            mode="600",
        )
    for svc in settings.services:
        dest = layout.model_dir(svc)
        if svc.model.source is ModelSource.LOCAL:
            assert svc.model.path
            models.local(name=f"Model for {svc.name}: {dest}", src=svc.model.path, dest=dest)
        else:
            assert svc.model.repo and svc.model.revision
            models.hub(
                name=f"Model for {svc.name}: {svc.model.repo}@{svc.model.revision[:12]}",
                repo=svc.model.repo,
                revision=svc.model.revision,
                dest=dest,
                venv=layout.release,
                user=settings.user,
                token_file=token_file,
            )
