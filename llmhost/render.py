"""The one renderer of the deploy's templates, each kept beside its component's code."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import jinja2


@cache
def _environment() -> jinja2.Environment:
    # Package data: a wheel install finds the templates as a checkout does.
    root = resources.files("llmhost")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def render(template: str, ctx: dict[str, Any]) -> str:
    """Render ``template`` (a path under the package, e.g. ``service/vllm.service.j2``) as
    pyinfra's files.template does."""
    return _environment().get_template(template).render(**ctx)
