"""The llmhost deploy: check the host → system → venv and models (background jobs, side by
side) → services → gateway → monitoring."""

from __future__ import annotations

from pyinfra import host, logger, state
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError

from llmhost import preflight, progress
from llmhost.gateway.phase import install_gateway
from llmhost.install.jobs import await_jobs
from llmhost.install.models import install_models
from llmhost.install.system import install_system
from llmhost.install.venv import install_venv
from llmhost.layout import Layout
from llmhost.monitoring import scrape
from llmhost.monitoring.phase import install_monitoring
from llmhost.service.phase import start_services
from llmhost.settings import Settings, SettingsError, data_defaults


@deploy("llmhost", data_defaults=data_defaults())
def llmhost() -> None:
    try:
        settings = Settings.from_host_data(host.data.dict(), where=host.name)
        checked = preflight.check_host(settings)
    except (SettingsError, preflight.PreflightError) as e:
        # Raised while pyinfra prepares: no operation has run on any host yet.
        raise DeployError(f"llmhost: nothing was changed.\n{e}") from None
    logger.info(f"{host.name}: VRAM plan\n{checked.plan.render_table()}")
    progress.watch(state)
    install_system(settings, checked)
    # The install starts in the background; the models arrive meanwhile.
    install_venv(settings, checked)
    install_models(settings, checked)
    await_jobs(settings, checked)
    start_services(settings, checked)
    # The front door: only once every service answers; then what watches all of it.
    scraped: list[scrape.Target] = []
    if settings.gateway:
        install_gateway(settings, checked)
        scraped += scrape.gateway_targets(host.name, Layout(settings).gateway_metrics_address)
    install_monitoring(settings, checked, extra_targets=scraped)
