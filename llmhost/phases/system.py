"""System: the service user, its directories, and the OS packages the venv needs."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import apt, files, server

from llmhost.settings import Settings

# python3-venv makes the venv; curl is the health probe; libnuma1 is loaded by vLLM's
# CPU and CUDA builds alike (torch's NUMA support).
PACKAGES = ["python3-venv", "curl", "ca-certificates", "libnuma1"]
# Marks the service user as the deploy's own: preflight refuses to take over any other account.
USER_COMMENT = "llmhost services"
NOLOGIN = "/usr/sbin/nologin"

# The phase's name in pyinfra's output (and in the deploy's phase times).
PHASE = "System: user, directories, packages"


@deploy(PHASE)
def install_system(settings: Settings) -> None:
    apt.packages(
        name="Install the OS packages the venv needs",
        packages=PACKAGES,
        update=True,
        cache_time=24 * 3600,
    )
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
    for path, owner, mode in (
        (settings.base_dir, "root", "755"),
        (settings.model_dir, "root", "755"),
        # Compile and hub caches: the only place the services write.
        (settings.cache_dir, settings.user, "750"),
        # Env files and secrets: readable by root (systemd) and the service user only.
        (settings.config_dir, "root", "750"),
    ):
        files.directory(
            name=f"Directory {path}",
            path=path,
            user=owner,
            group=settings.user,
            mode=mode,
            present=True,
        )
