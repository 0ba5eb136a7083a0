"""Python env: the pinned vLLM in a release venv of its own, beside the one the services run."""

from __future__ import annotations

from pyinfra.api import deploy

from llmhost.checked import Checked
from llmhost.layout import Layout, install_job
from llmhost.operations import venv
from llmhost.settings import Settings

# The phase's name in pyinfra's output (and in the deploy's phase times).
PHASE = "Python env: pinned vLLM release"


@deploy(PHASE)
def install_venv(settings: Settings, checked: Checked) -> None:
    layout = Layout(settings)
    if checked.marked(layout.release_stamp, layout.release_digest):
        return
    # A new pin builds a new release: the running services keep theirs until each switches.
    venv.pinned(
        name=f"Install {' '.join(layout.packages)} into {layout.release}",
        path=layout.release,
        packages=layout.packages,
        unit=install_job(layout.release),
        stamp=layout.release_stamp,
        python=settings.python,
        remove=settings.pip_remove,
        find_links=layout.wheelhouse,
        wheelhouse=settings.wheelhouse,
        pip_cache_dir=settings.pip_cache_dir,
        index=settings.pip_index,
        import_check=layout.server_module,
    )
