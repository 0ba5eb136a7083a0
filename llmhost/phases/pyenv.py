"""Python env: a venv with the pinned vLLM (and a wheelhouse for air-gapped hosts)."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from llmhost.operations import venv
from llmhost.settings import Settings


@deploy("Python env: pinned vLLM")
def pyenv(settings: Settings) -> OperationMeta:
    find_links = None
    if settings.wheelhouse:
        find_links = f"{settings.base_dir}/wheelhouse"
        files.sync(
            name="Push the wheelhouse",
            src=settings.wheelhouse,
            dest=find_links,
            mode="644",
            add_deploy_dir=False,
        )
    return venv.pinned(
        name=f"Install {settings.vllm_package}=={settings.vllm_version} into {settings.venv}",
        path=settings.venv,
        packages=[f"{settings.vllm_package}=={settings.vllm_version}", *settings.pip_extra],
        python=settings.python,
        remove=settings.pip_remove,
        find_links=find_links,
        pip_cache_dir=settings.pip_cache_dir,
    )
