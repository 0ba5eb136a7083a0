from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest

from llmhost.plan.catalogue import catalogue_entry, from_catalogue
from llmhost.settings import Settings, SettingsError
from llmhost.stacks import STACKS, stack_services

DEFAULTS = {
    key: value
    for key, value in runpy.run_path(
        str(Path(__file__).resolve().parents[2] / "group_data" / "all.py")
    ).items()
    if key.startswith("llmhost_")
}


def _settings(stack: str, **data: Any) -> Settings:
    return Settings.from_host_data({**DEFAULTS, "llmhost_stack": stack, **data})


def test_the_seed_stacks() -> None:
    assert list(STACKS) == ["primary", "single-vendor", "max-quality"]


@pytest.mark.parametrize("stack", list(STACKS))
def test_stack_validates_as_coder_and_general(stack: str) -> None:
    services = _settings(stack).services
    assert [(s.name, s.port) for s in services] == [("coder", 8001), ("general", 8002)]
    for svc in services:
        assert svc.max_num_seqs >= svc.concurrency
        assert svc.model.repo and svc.model.revision


@pytest.mark.parametrize("stack", list(STACKS))
def test_stack_models_are_catalogued_and_within_their_length(stack: str) -> None:
    for svc in _settings(stack).services:
        assert svc.model.repo and svc.model.revision
        assert catalogue_entry(svc.model.repo, svc.model.revision) is not None
        meta = from_catalogue(svc.model.repo, svc.model.revision)
        # Within the trained length, not just what vLLM's rope arithmetic would accept.
        assert svc.max_model_len <= meta.max_position_embeddings


def test_primary_offers_the_instruct_mistral_not_the_seeds_base_model() -> None:
    repos = {svc["model"]["repo"] for svc in stack_services("primary")}
    assert repos == {
        "TheBloke/deepseek-coder-33B-instruct-AWQ",
        "TheBloke/Mistral-7B-Instruct-v0.2-AWQ",
    }


def test_stack_services_returns_deep_copies() -> None:
    services = stack_services("primary")
    services[0]["model"]["repo"] = "changed"
    services[0]["max_model_len"] = 1
    assert stack_services("primary")[0]["model"]["repo"] != "changed"
    assert STACKS["primary"][0]["max_model_len"] != 1


@pytest.mark.parametrize("name", ["nope", None])
def test_unknown_stack_names_the_known_ones(name: str | None) -> None:
    with pytest.raises(KeyError) as err:
        stack_services(name)
    assert all(stack in err.value.args[0] for stack in STACKS)


def test_settings_report_an_unknown_stack_with_its_key() -> None:
    with pytest.raises(SettingsError, match="llmhost_stack: unknown stack 'nope'"):
        _settings("nope")


def test_overrides_change_one_knob_of_a_stack() -> None:
    settings = _settings(
        "single-vendor", llmhost_service_overrides={"coder": {"max_model_len": 8192}}
    )
    assert settings.service("coder").max_model_len == 8192
    assert settings.service("general").max_model_len == 32768
