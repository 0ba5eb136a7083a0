"""The schema of llmhost's host data: every ``llmhost_*`` key, validated before any operation.

Default values live in ``group_data/all.py`` (one documented place users edit); this module
holds types and rules. ``Settings.from_host_data`` turns pyinfra host data into a validated
object or raises ``SettingsError`` naming the key and the fix.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PREFIX = "llmhost_"
REVISION_RE = re.compile(r"^[0-9a-f]{40}$")
NAME_RE = r"^[a-z][a-z0-9-]{0,30}$"


class SettingsError(ValueError):
    """Host data that cannot work; the message names the key and the fix."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSource(StrEnum):
    HUB = "hub"
    LOCAL = "local"


class ModelSpec(Strict):
    source: ModelSource
    # hub: the repo id and its pinned commit; local: a directory on the controller.
    repo: str | None = None
    revision: str | None = None
    path: str | None = None
    # Gated hub repos need a token (HF_TOKEN on the controller or llmhost_hf_token_file).
    gated: bool = False

    @model_validator(mode="after")
    def _source_fields(self) -> ModelSpec:
        if self.source is ModelSource.HUB:
            if not self.repo:
                raise ValueError("source 'hub' needs 'repo' (e.g. 'Qwen/Qwen2.5-7B-Instruct-AWQ')")
            if not self.revision or not REVISION_RE.match(self.revision):
                raise ValueError(
                    "source 'hub' needs 'revision' pinned to a 40-hex commit sha "
                    f"(got {self.revision!r}); find it on the repo's 'Files' page"
                )
        elif not self.path:
            raise ValueError("source 'local' needs 'path', a model directory on the controller")
        return self

    @property
    def dirname(self) -> str:
        """The directory name the model gets under ``llmhost_model_dir`` on the host."""
        if self.source is ModelSource.HUB:
            assert self.repo and self.revision
            return f"{self.repo.replace('/', '--')}--{self.revision[:12]}"
        assert self.path
        return PurePosixPath(self.path).name


class ServiceSpec(Strict):
    name: Annotated[str, Field(pattern=NAME_RE)]
    served_model_name: str
    port: Annotated[int, Field(ge=1024, le=65535)]
    model: ModelSpec
    max_model_len: Annotated[int, Field(ge=16)]
    # How many sequences of max_model_len tokens must fit in the KV cache at once.
    concurrency: Annotated[int, Field(ge=1)] = 1
    max_num_seqs: Annotated[int, Field(ge=1)] = 64
    max_num_batched_tokens: Annotated[int, Field(ge=16)] = 8192
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    enforce_eager: bool = False
    # Lab (CPU build): the core(s) this instance's OpenMP threads are pinned to.
    cpu_threads_bind: str | None = None
    extra_args: list[str] = []


class Settings(Strict):
    gpu: bool
    stack: str | None
    services: list[ServiceSpec]
    user: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")]
    base_dir: str
    model_dir: str
    cache_dir: str
    config_dir: str
    python: str
    vllm_package: str
    vllm_version: str
    pip_extra: list[str]
    pip_remove: list[str]
    wheelhouse: str | None
    pip_cache_dir: str | None
    launcher: Literal["vllm-serve", "api-server-module"]
    bind_host: str
    gpu_memory_cap: Annotated[float, Field(gt=0.1, le=0.98)]
    gpu_headroom_gib: Annotated[float, Field(ge=0)]
    cpu_kv_cache_gib: Annotated[int, Field(ge=1)] | None
    min_nvidia_driver: str
    health_timeout_s: Annotated[int, Field(ge=10)]
    api_key_file: str | None
    hf_token_file: str | None
    load_requests: Annotated[int, Field(ge=1)]

    @field_validator("base_dir", "model_dir", "cache_dir", "config_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path on the host, got {value!r}")
        return value

    @field_validator("services")
    @classmethod
    def _services_distinct(cls, services: list[ServiceSpec]) -> list[ServiceSpec]:
        # A field validator, so the error is reported under llmhost_services.
        if not services:
            raise ValueError("no services: set llmhost_stack or llmhost_services")
        for attr in ("name", "port", "served_model_name"):
            seen: dict[Any, str] = {}
            for svc in services:
                value = getattr(svc, attr)
                if value in seen:
                    raise ValueError(
                        f"services {seen[value]!r} and {svc.name!r} both use {attr} {value!r}; "
                        f"give each service its own {attr} (llmhost_services or "
                        "llmhost_service_overrides)"
                    )
                seen[value] = svc.name
        return services

    @property
    def venv(self) -> str:
        return f"{self.base_dir}/venv"

    def service(self, name: str) -> ServiceSpec:
        return next(svc for svc in self.services if svc.name == name)

    @classmethod
    def from_host_data(cls, data: Mapping[str, Any], where: str = "host data") -> Settings:
        """Validate the ``llmhost_*`` keys of one host's data (pyinfra's own keys are ignored)."""
        ours = {k[len(PREFIX) :]: v for k, v in data.items() if k.startswith(PREFIX)}
        known = {*cls.model_fields, "service_overrides"}
        unknown = sorted(set(ours) - known)
        if unknown:
            raise SettingsError(
                f"{where}: unknown key(s) "
                f"{', '.join(PREFIX + k + _did_you_mean(k, known, PREFIX) for k in unknown)}; "
                f"known keys are listed in group_data/all.py and the README"
            )
        overrides = ours.pop("service_overrides", None) or {}
        if not ours.get("services"):
            from llmhost.stacks import stack_services

            try:
                ours["services"] = stack_services(ours.get("stack"))
            except KeyError as e:
                raise SettingsError(f"{where}: llmhost_stack: {e.args[0]}") from None
        ours["services"] = _apply_overrides(ours["services"], overrides, where)
        try:
            return cls.model_validate(ours)
        except ValidationError as e:
            raise SettingsError(_describe(e, where, ours)) from None


def _apply_overrides(
    services: list[dict[str, Any]], overrides: Mapping[str, Mapping[str, Any]], where: str
) -> list[dict[str, Any]]:
    names = [svc.get("name") for svc in services]
    for name in overrides:
        if name not in names:
            raise SettingsError(
                f"{where}: llmhost_service_overrides names service {name!r}"
                f"{_did_you_mean(str(name), map(str, names))}, but the services are {names}"
            )
    merged = []
    for svc in services:
        svc = copy.deepcopy(dict(svc))
        for key, value in overrides.get(svc.get("name"), {}).items():
            if key == "model" and isinstance(value, Mapping):
                svc["model"] = {**svc.get("model", {}), **value}
            else:
                svc[key] = value
        merged.append(svc)
    return merged


def _describe(error: ValidationError, where: str, raw: Mapping[str, Any]) -> str:
    lines = []
    for err in error.errors():
        loc = list(err["loc"])
        key = PREFIX + str(loc.pop(0)) if loc else "(llmhost settings)"
        if key == PREFIX + "services" and loc and isinstance(loc[0], int):
            index = loc.pop(0)
            try:
                key += f"[{raw['services'][index].get('name', index)!r}]"
            except (IndexError, AttributeError, KeyError):
                key += f"[{index}]"
        path = "".join(f".{part}" for part in loc if not str(part).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            spec = ModelSpec if "model" in loc[:-1] else ServiceSpec
            msg = (
                f"unknown key{_did_you_mean(str(loc[-1]), spec.model_fields)}; "
                "see the README's service keys"
            )
        elif err["type"] == "missing":
            msg = "missing; group_data/all.py sets a default for every key, restore it there"
        elif err["type"] != "value_error":
            # Type and range errors: show what was given, the message says what is wanted.
            msg += f"; got {err['input']!r}"
        lines.append(f"{where}: {key}{path}: {msg}")
    return "\n".join(lines)


def _did_you_mean(name: str, known: Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""
