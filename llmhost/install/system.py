"""System: the service user, its directories, and the OS packages the venv needs."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import apt, server

from llmhost.checked import Checked
from llmhost.layout import NOLOGIN, USER_COMMENT
from llmhost.settings import Settings

# python3-venv makes the venv; curl is the health probe; libnuma1 is loaded by vLLM's
# CPU and CUDA builds alike (torch's NUMA support).
PACKAGES = ["python3-venv", "curl", "ca-certificates", "libnuma1"]

# The phase's name in pyinfra's output (and in the deploy's phase times).
PHASE = "System: user, directories, packages"


@deploy(PHASE)
def install_system(settings: Settings, checked: Checked) -> None:
    # What preflight read shows done is not asked again (pyinfra's user operation reads
    # every account on the host, each run).
    if not checked.installed(PACKAGES):
        apt.packages(
            name="Install the OS packages the venv needs",
            packages=PACKAGES,
            update=True,
            cache_time=24 * 3600,
        )
    if not checked.account_ready:
        server.group(name=f"Group {settings.user}", group=settings.user, system=True)
        server.user(
            name=f"Service user {settings.user}",
            user=settings.user,
            group=settings.user,
            system=True,
            comment=USER_COMMENT,
            home=settings.cache_dir,
            create_home=False,
            shell=NOLOGIN,
        )
    checked.directories(
        "Directories: base, models, cache, config",
        [
            {"path": settings.base_dir, "group": settings.user, "mode": "755"},
            {"path": settings.model_dir, "group": settings.user, "mode": "755"},
            # Compile and hub caches: the only place the services write.
            {"path": settings.cache_dir, "user": settings.user, "group": settings.user,
             "mode": "750"},
            # Env files and secrets: readable by root (systemd) and the service user only.
            {"path": settings.config_dir, "group": settings.user, "mode": "750"},
        ],
    )  # fmt: skip
