"""Host data validation: each mistake gives one line naming the key and the fix."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from llmhost.settings import Settings, SettingsError, data_defaults, group_data_file, key_table
from llmhost.stacks import stack_services

ROOT = Path(__file__).resolve().parents[2]
GROUP_DATA = {
    k: v
    for k, v in runpy.run_path(str(ROOT / "group_data/all.py")).items()
    if k.startswith("llmhost_")
}


def settings(**changes) -> Settings:
    return Settings.from_host_data({**changes, "ssh_user": "root"}, "gpu-01")


def test_defaults_are_valid() -> None:
    assert [svc.name for svc in settings().services] == ["coder", "general"]


def test_group_data_all_shows_exactly_the_schema_defaults() -> None:
    assert data_defaults() == GROUP_DATA


def test_group_data_all_is_written_from_the_schema() -> None:
    # Its comments too: a description changed in the schema cannot leave a stale line here.
    assert (ROOT / "group_data/all.py").read_text() == group_data_file(), (
        "regenerate group_data/all.py: see its first lines"
    )


def test_readme_key_table_is_the_schemas() -> None:
    assert key_table() in (ROOT / "README.md").read_text()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"llmhost_bind_hots": "0.0.0.0"}, "gpu-01: unknown key(s) llmhost_bind_hots"),
        (
            {"llmhost_prometheus_port": 8001},
            "gpu-01: llmhost_prometheus_port 8001 is also service 'coder''s port",
        ),
        ({"llmhost_monitoring_bind_host": "10.0.0.5"}, "llmhost_monitoring_bind_host '10.0.0.5'"),
        ({"llmhost_monitoring": "yes"}, "gpu-01: llmhost_monitoring"),
        ({"llmhost_gpu_memory_cap": "lots"}, "gpu-01: llmhost_gpu_memory_cap: Input should be"),
        ({"llmhost_gpu_memory_cap": 0.99}, "llmhost_gpu_memory_cap: Input should be less than"),
        ({"llmhost_model_dir": "models"}, "llmhost_model_dir: must be an absolute path"),
        ({"llmhost_base_dir": "/opt/llmhost "}, "llmhost_base_dir: use letters, digits"),
        (
            {"llmhost_service_overrides": {"coder": {"env": {"HOME": "/root"}}}},
            "llmhost_services['coder'].env: HOME: set by the deploy itself",
        ),
        ({"llmhost_cache_dir": "/var/cache/llm%host"}, "no spaces, quotes, '%' or '$'"),
        (
            {"llmhost_gateway_metrics_port": 9100},
            "llmhost_node_exporter_port 9100 is also llmhost_gateway_metrics_port's port",
        ),
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
        (
            {"llmhost_pip_index": False},
            "llmhost_pip_index is False but llmhost_wheelhouse is unset",
        ),
        (
            {"llmhost_service_overrides": {"coder": {"max_num_batched_tokens": 16}}},
            "llmhost_services['coder']: max_num_batched_tokens 16 is below max_num_seqs",
        ),
    ],
    ids=[
        "typo-key", "monitoring-port-clash", "public-monitoring", "monitoring-mode",
        "wrong-type", "out-of-range", "relative-path", "trailing-space-dir",
        "env-overrides-the-deploy", "percent-in-dir",
        "gateway-metrics-port-clash", "unknown-stack", "port-clash",
        "same-served-name", "typo-service-key", "unpinned-revision", "unknown-service",
        "no-index-no-wheelhouse", "batch-below-seqs",
    ],
)  # fmt: skip
def test_bad_data_is_refused_with_the_key(changes: dict, message: str) -> None:
    with pytest.raises(SettingsError) as error:
        settings(**changes)
    assert message in str(error.value)


def _svc(**changes) -> dict:
    return {"llmhost_service_overrides": {"coder": changes}}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"llmhost_user": "root"}, "llmhost_user: the services must not run as root"),
        ({"llmhost_bind_host": "not an address"}, "neither an IP address nor a host name"),
        ({"llmhost_bind_host": "0.0.0.0"}, "set llmhost_bind_public = True to accept that"),
        ({"llmhost_bind_host": "::"}, "answer without the API key"),
        ({"llmhost_base_dir": "/usr"}, "llmhost_base_dir: /usr is a system directory"),
        ({"llmhost_config_dir": "/"}, "llmhost_config_dir: / is a system directory"),
        ({"llmhost_base_dir": "/opt/x/../../etc"}, "without '.', '..', '//' or a trailing '/'"),
        ({"llmhost_model_dir": "/srv/models/"}, "without '.', '..', '//' or a trailing '/'"),
        (
            {"llmhost_cache_dir": "/srv/llmhost/models/cache"},
            "llmhost_model_dir '/srv/llmhost/models' and llmhost_cache_dir "
            "'/srv/llmhost/models/cache' overlap",
        ),
        ({"llmhost_config_dir": "/opt/llmhost"}, "llmhost_base_dir '/opt/llmhost' and llmhost_"),
        ({"llmhost_pip_extra": ["torch"]}, "'torch' is not a pinned requirement"),
        ({"llmhost_pip_extra": ["--index-url=http://x"]}, "write NAME==VERSION"),
        ({"llmhost_pip_extra": ["x @ file:///tmp/x.whl"]}, "not a pinned requirement"),
        ({"llmhost_pip_remove": ["-r", "x"]}, "llmhost_pip_remove: '-r' is not a package name"),
        (_svc(served_model_name="tiny coder"), "served_model_name: 'tiny coder' is not allowed"),
        (_svc(cpu_threads_bind="0\nLD_PRELOAD=/x.so"), "cpu_threads_bind: '0\\nLD_PRELOAD"),
        (_svc(model={"repo": "../../etc"}), "model.repo: '../../etc' is not allowed here"),
        ({"llmhost_hf_endpoint": "https://me:hf_x@mirror"}, "with no credentials"),
        ({"llmhost_hf_endpoint": "file:///srv/hub"}, "is not a hub address"),
        ({"llmhost_hf_endpoint": "https://mirror\nHF_TOKEN=x"}, "is not a hub address"),
    ],
    ids=[
        "root-user", "bind-not-an-address", "bind-wildcard-v4", "bind-wildcard-v6",
        "system-base-dir", "root-config-dir", "dotdot-dir", "trailing-slash", "nested-dirs",
        "same-dirs", "unpinned-extra", "pip-option", "pip-url", "pip-remove-option",
        "served-name-space", "env-injection", "repo-traversal", "hub-credentials",
        "hub-not-http", "hub-env-injection",
    ],
)  # fmt: skip
def test_input_that_could_break_the_host_is_refused(changes: dict, message: str) -> None:
    with pytest.raises(SettingsError) as error:
        settings(**changes)
    assert message in str(error.value)
    assert len(str(error.value).splitlines()) == 1, error.value


@pytest.mark.parametrize(
    "changes",
    [
        {"llmhost_bind_host": "0.0.0.0", "llmhost_bind_public": True},
        {"llmhost_bind_host": "::1"},
        {"llmhost_bind_host": "localhost"},
        {"llmhost_pip_extra": ["torch==2.13.0+cpu"]},
        _svc(cpu_threads_bind="0-3|4-7"),
        {"llmhost_hf_endpoint": "http://10.0.0.5:8090/hub/"},
    ],
)
def test_good_input_near_the_rules_is_accepted(changes: dict) -> None:
    settings(**changes)


def test_hub_endpoint_is_kept_without_its_trailing_slash() -> None:
    # huggingface_hub joins paths onto it: "https://m//api/models" is another path on some mirrors.
    assert settings(llmhost_hf_endpoint="https://mirror.example/").hf_endpoint == (
        "https://mirror.example"
    )


# The primary stack's general service, as data.
_GENERAL = next(svc for svc in stack_services("primary") if svc["name"] == "general")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (_svc(replicas=0), "llmhost_services['coder'].replicas: Input should be greater than"),
        (
            _svc(replicas=2, cpu_threads_bind=["0"]),
            "llmhost_services['coder']: cpu_threads_bind lists 1 binding(s) for 2 replica(s)",
        ),
        (_svc(replicas=2, cpu_threads_bind=["0", "x"]), "cpu_threads_bind.1: 'x' is not allowed"),
        (_svc(replicas=3, gpus=[0, 1]), "gpus lists 2 GPU(s) for 3 replicas; with replicas"),
        # coder on 8001 x 2 takes 8002, general's port.
        (
            _svc(replicas=2),
            "service 'general' 8002 is also service 'coder-2''s port (replica n listens on the "
            "service's port + n - 1)",
        ),
        (_svc(replicas=2, port=65535), "port 65535: replica n listens on the service's port"),
        (
            {"llmhost_services": [
                {**_GENERAL, "replicas": 2},
                {**_GENERAL, "name": "general-2", "port": 9000, "served_model_name": "g2"},
            ]},
            "services 'general' and 'general-2' both run a unit named llmhost-general-2",
        ),
    ],
    ids=["none", "binds-short", "bind-bad", "gpus-short", "port-clash", "port-past-end",
         "unit-clash"],
)  # fmt: skip
def test_replicas_need_their_own_ports_cores_and_names(changes: dict, message: str) -> None:
    with pytest.raises(SettingsError) as error:
        settings(**changes)
    assert message in str(error.value)
    assert len(str(error.value).splitlines()) == 1, error.value


def test_replicas_are_units_named_apart_on_consecutive_ports() -> None:
    s = settings(llmhost_service_overrides={"general": {"replicas": 3, "port": 8010}})
    assert [(u.name, u.port, u.replica_of) for u in s.instances] == [
        ("coder", 8001, None), ("general", 8010, "general"), ("general-2", 8011, "general"),
        ("general-3", 8012, "general"),
    ]  # fmt: skip
    # One replica: the service's own unit, unchanged (an existing host keeps its names).
    assert settings().instances == settings().services
