"""The layout the architecture promises, read from the source: imports run one way between layers and form
no circles (imports inside functions count), model-specific code stays out of generic modules, and no
module grows past the size a reader can hold."""
from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400

# Lower layers never import higher ones; folders of the same rank do not import each other.
RANKS = {"core": 0, "runtimes": 1, "sdk": 2, "calibration": 3, "models": 3, "export": 4, "training": 5, "top": 6}
LAYER_OF_FOLDER = {"runtimes": "runtimes", "sdk": "sdk", "calibration": "calibration", "models": "models",
                   "export": "export", "training": "training"}
TOP_MODULES = {"kvqe", "kvqe.cli", "kvqe.gating"}  # the facade, the CLI and gating (score + enhance) sit above
TOP_PACKAGES = ("kvqe.commands.", "kvqe.report.")  # the CLI's commands and the reports they write

# Model-specific runtime and export code lives in these folders; everything else in the package is generic.
MODEL_SPECIFIC = ("sdk/pipelines/", "export/pipelines/")
GENERIC_FOLDERS = ("kvqe", "runtimes", "sdk", "calibration", "export")


def _package_dirs() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {package: ROOT / folder for package, folder in config["tool"]["setuptools"]["package-dir"].items()}


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package, folder in _package_dirs().items():
        for path in folder.glob("*.py"):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


def _imports(path: Path, known: set[str]) -> Iterator[str]:
    """The modules of ``known`` the file imports, at any depth, except imports only a type checker runs.
    ``from package import module`` counts as importing the module, not the package's ``__init__``."""
    def walk(nodes: list[ast.stmt]) -> Iterator[str]:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                yield from walk(node.orelse)
                continue
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    yield submodule if submodule in known else node.module
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from walk([child])
    yield from (name for name in walk(ast.parse(path.read_text()).body) if name in known)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: set(_imports(path, known)) - {name} for name, path in modules.items()}


def _layer(module: str) -> str:
    if module in TOP_MODULES or module.startswith(TOP_PACKAGES):
        return "top"
    parts = module.split(".")
    return LAYER_OF_FOLDER.get(parts[1], "core") if len(parts) > 1 else "core"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _sources() -> list[Path]:
    """The package's modules (pyproject's package map) and the scripts beside it (bench, scripts, CI): never the
    working tree at large, which may hold virtual environments (README's demo creates ``.venv-runtime/``)."""
    scripts = [path for folder in ("bench", "scripts", ".ci") for path in (ROOT / folder).glob("*.py")]
    return sorted([*_modules().values(), *scripts])


def test_the_graph_reads_the_imports_it_should() -> None:
    graph = _graph()
    assert len(graph) > 80
    assert "kvqe.errors" in graph["kvqe.files"]
    assert "kvqe.models.registry" in graph["kvqe.models.realesrgan"]


def test_no_import_circles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_run_down_the_layers() -> None:
    upward = []
    for module, targets in _graph().items():
        for target in targets:
            mine, theirs = _layer(module), _layer(target)
            if mine != theirs and RANKS[theirs] >= RANKS[mine]:
                upward.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert upward == []


def test_the_registry_does_not_import_the_models_it_registers() -> None:
    graph = _graph()
    assert {target for target in graph["kvqe.models.registry"] if _layer(target) != "core"} == set()


@pytest.mark.parametrize("folder", GENERIC_FOLDERS)
def test_generic_modules_name_no_particular_model(folder: str) -> None:
    named = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith(MODEL_SPECIFIC):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"sinsr", line, re.IGNORECASE):
                named.append(f"{relative}:{number}: {line.strip()}")
    assert named == []


def test_no_module_is_longer_than_a_reader_can_hold() -> None:
    long = {path.relative_to(ROOT).as_posix(): length for path in _sources()
            if (length := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_size_check_reads_only_the_package_and_its_scripts() -> None:
    folders = {*_package_dirs().values(), *(ROOT / folder for folder in ("bench", "scripts", ".ci"))}
    outside = [path for path in _sources() if path.parent not in folders]
    assert outside == [] and len(_sources()) >= len(_modules())
