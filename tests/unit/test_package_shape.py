"""The package's shape: no import circle, short functions, a folder per component that imports no
other component, stdlib-only code for hosts, nothing of the tests or the lab in what a deploy
imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "llmhost"
MAX_LINES = 50
# The deploy's components, each a folder with its phase; deploy.py lists them in order.
COMPONENTS = ("install", "service", "gateway", "monitoring")
# pyinfra's toolbox: generic operations and facts, taking paths as arguments.
TOOLBOX = ("operations", "facts")
MAX_TOP_LEVEL_MODULES = 12


def _modules(package: Path = PACKAGE) -> dict[str, ast.Module]:
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def _imports(tree: ast.Module, modules: set[str]) -> set[str]:
    """The package modules ``tree`` imports, at any depth (function-local imports count)."""
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        found |= {n for n in names if n in modules}
    return found


def test_no_import_circle() -> None:
    modules = _modules()
    graph = {name: _imports(tree, set(modules)) - {name} for name, tree in modules.items()}
    # Packages import their submodules only through the files that name them.
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            pytest.fail(f"import circle: {' -> '.join([*path[path.index(name) :], name])}")
        if name in done:
            return
        for dep in sorted(graph.get(name, ())):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's lines, its docstring left out."""
    assert node.end_lineno is not None
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        assert first.end_lineno is not None
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_no_function_over_the_limit() -> None:
    long = [
        f"{name}.{node.name}: {_body_lines(node)} lines"
        for package in (PACKAGE, ROOT / "llmhost_lab")
        for name, tree in _modules(package).items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and _body_lines(node) > MAX_LINES
    ]
    assert not long, f"split into named steps (at most {MAX_LINES} lines): {long}"


def test_the_deploy_imports_no_test_or_lab_module() -> None:
    code = (
        "import sys, llmhost.deploy; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'pytest', '_pytest', 'testinfra', 'llmhost_lab'} | "
        "{m for m in sys.modules if m in ('llmhost.verify',)}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _folder_imports() -> dict[str, set[str]]:
    """Each folder of the package -> the package's other top-level names it imports."""
    modules = _modules()
    found: dict[str, set[str]] = {}
    for name, tree in modules.items():
        parts = name.split(".")
        if len(parts) < 3:
            continue
        used = {m.split(".")[1] for m in _imports(tree, set(modules)) if m.count(".") >= 1}
        found.setdefault(parts[1], set()).update(used - {parts[1]})
    return found


def test_components_import_no_other_component() -> None:
    crossing = {
        folder: sorted(used & set(COMPONENTS))
        for folder, used in _folder_imports().items()
        if folder in COMPONENTS + TOOLBOX and used & set(COMPONENTS)
    }
    assert not crossing, f"move what they share to the top level or the toolbox: {crossing}"


def test_the_toolbox_imports_only_the_toolbox() -> None:
    # As pyinfra's own operations import only facts and utilities: paths come as arguments.
    allowed = {*TOOLBOX, "remote", "cache"}
    beyond = {f: sorted(used - allowed) for f, used in _folder_imports().items() if f in TOOLBOX}
    assert not any(beyond.values()), beyond


# Remote code that runs on the tools venv's python (the pinned hub client), and what it may use.
ON_TOOLS_VENV = {"hub_resume.py": {"huggingface_hub"}}


def test_remote_code_is_standard_library_only() -> None:
    # It is sent to hosts that do not have llmhost, or any package but Python's own.
    outside = []
    for path in sorted((PACKAGE / "remote").rglob("*.py")):
        allowed = set(sys.stdlib_module_names) | ON_TOOLS_VENV.get(path.name, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            top = {n.split(".")[0] for n in names} - allowed - {"__future__"}
            outside += [f"{path.name}: {n}" for n in sorted(top)]
    assert not outside, outside


def test_the_top_level_holds_at_most_twelve_modules() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"give these a folder: {top}"
