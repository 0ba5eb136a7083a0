"""Host data validation: each mistake gives one line naming the key and the fix."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from llmhost.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = {
    k: v
    for k, v in runpy.run_path(str(ROOT / "group_data/all.py")).items()
    if k.startswith("llmhost_")
}


def settings(**changes) -> Settings:
    return Settings.from_host_data({**DEFAULTS, **changes, "ssh_user": "root"}, "gpu-01")


def test_defaults_are_valid_and_cover_every_key() -> None:
    valid = settings()
    assert {f"llmhost_{k}" for k in Settings.model_fields} | {"llmhost_service_overrides"} == set(
        DEFAULTS
    )
    assert [svc.name for svc in valid.services] == ["coder", "general"]


def test_readme_documents_every_key() -> None:
    readme = (ROOT / "README.md").read_text()
    for key in DEFAULTS:
        assert f"| `{key}` |" in readme, key


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"llmhost_bind_hots": "0.0.0.0"}, "gpu-01: unknown key(s) llmhost_bind_hots"),
        ({"llmhost_gpu_memory_cap": "lots"}, "gpu-01: llmhost_gpu_memory_cap: Input should be"),
        ({"llmhost_gpu_memory_cap": 0.99}, "llmhost_gpu_memory_cap: Input should be less than"),
        ({"llmhost_model_dir": "models"}, "llmhost_model_dir: must be an absolute path"),
        ({"llmhost_stack": "tiny"}, "gpu-01: llmhost_stack:"),
        (
            {"llmhost_service_overrides": {"general": {"port": 8001}}},
            "services 'coder' and 'general' both use port 8001; give each service its own port",
        ),
        (
            {
                "llmhost_service_overrides": {
                    "general": {"served_model_name": "x"},
                    "coder": {"served_model_name": "x"},
                }
            },
            "both use served_model_name 'x'",
        ),
        (
            {"llmhost_service_overrides": {"coder": {"max_model_lenght": 4096}}},
            "llmhost_services['coder'].max_model_lenght: unknown key (did you mean max_model_len?)",
        ),
        (
            {"llmhost_service_overrides": {"coder": {"model": {"revision": "main"}}}},
            "needs 'revision' pinned to a 40-hex commit sha",
        ),
        (
            {"llmhost_service_overrides": {"writer": {"port": 9000}}},
            "llmhost_service_overrides names service 'writer'",
        ),
    ],
    ids=[
        "typo-key", "wrong-type", "out-of-range", "relative-path", "unknown-stack", "port-clash",
        "same-served-name", "typo-service-key", "unpinned-revision", "unknown-service",
    ],
)  # fmt: skip
def test_bad_data_is_refused_with_the_key(changes: dict, message: str) -> None:
    with pytest.raises(SettingsError) as error:
        settings(**changes)
    assert message in str(error.value)
