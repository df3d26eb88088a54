"""The room plan, read from the source: a stage imports the shared library, not another stage's
code (except where that dependency is the point, listed below with why); nothing imports a
stage's `__main__`; the error type is a leaf; and no import circle, counting imports inside
functions (they run as surely, only later)."""

from __future__ import annotations

import ast
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.stage_deps import PACKAGE, imported, module_file

SRC = ROOT / "src"
# Packages that are a pipeline stage or a tool around it; everything else under embedtune/ is
# the shared library (config, io, errors, stage, retrieval, reading, embeddings, ...).
ROOMS = ("download", "chunk", "synth", "embed", "mine", "train", "select", "eval", "export")
ROOMS += ("tools", "compose")
# (importing room, imported module pattern): why the dependency is the point.
ALLOWED = {
    ("train", "embedtune.mine.mined"): "trains on the questions and negatives mine wrote",
    ("select", "embedtune.train.methods.base"): "loads the tuned model, draws its held-out slice",
    ("eval", "embedtune.train.methods.base"): "loads the tuned model it scores",
    ("eval", "embedtune.mine.mined"): "scores the seen-corpus questions mine set aside",
    ("export", "embedtune.train.methods.*"): "exports the tuned-model classes",
    ("tools", "embedtune.train.methods.base"): "`embedtune search` loads the tuned model",
    ("tools", "embedtune.synth.llm.*"): "the LLM server serves synth's transformers backend",
    ("compose", "embedtune.synth.llm.base"): "checks the llm section by its backend's schema",
    ("compose", "embedtune.train.methods.base"): "checks the train section by its method's schema",
}


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(src: Path) -> dict[str, set[str]]:
    """Module -> the project's modules it imports, anywhere in its body (deepest names only:
    a package's own __init__ counts where it is imported by name)."""
    graph = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        found = imported(ast.parse(path.read_text(), str(path)), src)
        graph[module_name(path, src)] = {
            name
            for name in found
            if not any(other.startswith(f"{name}.") for other in found)
            or module_file(src, name).name != "__init__.py"
        }
    return graph


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else None


def crossings(graph: dict[str, set[str]]) -> list[str]:
    """Imports of another room's code that `ALLOWED` does not list."""
    found = []
    for module, targets in graph.items():
        for target in targets:
            source, dest = room(module), room(target)
            if dest is None or dest == source:
                continue
            if not any(source == r and fnmatch(target, p) for r, p in ALLOWED):
                found.append(f"{module} -> {target}")
    return sorted(found)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, as the modules on it (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


GRAPH = import_graph(SRC)


def test_a_stage_imports_another_stage_only_where_the_dependency_is_the_point():
    assert crossings(GRAPH) == []


def test_every_allowed_crossing_is_still_used():
    used = {
        (room(module), pattern)
        for module, targets in GRAPH.items()
        for target in targets
        for (_, pattern) in ALLOWED
        if fnmatch(target, pattern) and room(target) != room(module)
    }
    assert set(ALLOWED) <= used


def test_no_import_circle_even_through_imports_inside_functions():
    assert circles(GRAPH) == []


def test_the_error_type_is_a_leaf():
    assert GRAPH["embedtune.errors"] == set()


@pytest.mark.parametrize("folder", ["src", "bench"])
def test_nothing_imports_a_stage_entry_point(folder):
    for path in (ROOT / folder).rglob("*.py"):
        names = imported(ast.parse(path.read_text(), str(path)), SRC)
        assert not [n for n in names if n.endswith(".__main__")], path


def test_the_checks_catch_a_crossing_and_a_circle():
    graph = {
        "embedtune.eval.tables": {"embedtune.train.methods.adapters"},
        "embedtune.config": {"embedtune.io"},
        "embedtune.io": {"embedtune.config"},
    }
    assert crossings(graph) == ["embedtune.eval.tables -> embedtune.train.methods.adapters"]
    assert circles(graph) == [["embedtune.config", "embedtune.io"]]


def test_test_modules_share_only_helpers_and_fixtures():
    """A test module imports shared code from tests/helpers/ (fixtures come from conftest.py),
    never from another test module."""
    for path in (ROOT / "tests").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests."):
                assert node.module.startswith("tests.helpers"), (path, node.module)
