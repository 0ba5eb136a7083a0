"""The llmhost deploy: preflight → system → Python env → models → services."""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError

from llmhost.phases import preflight
from llmhost.phases.models import install_models
from llmhost.phases.pyenv import pyenv
from llmhost.phases.services import install_services
from llmhost.phases.system import system
from llmhost.settings import Settings, SettingsError


@deploy("llmhost")
def llmhost() -> None:
    try:
        settings = Settings.from_host_data(host.data.dict(), where=host.name)
        checked = preflight.run(settings)
    except (SettingsError, preflight.PreflightError) as e:
        # Raised while pyinfra prepares: no operation has run on any host yet.
        raise DeployError(f"llmhost: nothing was changed.\n{e}") from None
    logger.info(f"{host.name}: VRAM plan\n{checked.plan.render_table()}")
    system(settings)
    venv_op = pyenv(settings)
    install_models(settings)
    # Running services keep the vLLM they started with until they restart.
    install_services(settings, checked, restart=venv_op.will_change)
