"""Each pipeline stage's import closure, read from the source, against dvc.yaml's `deps`.

Every `import embedtune...` counts, at module level or inside a function (a lazy import still
decides the stage's result), and so does every module of a package that a `Registry` discovers
(its parts are found at run time, not imported by name).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "embedtune"


def module_file(src: Path, name: str) -> Path | None:
    """The file of module `name` under `src` (a package's __init__.py), or None."""
    base = src.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported(tree: ast.Module, src: Path, module_level_only: bool = False) -> set[str]:
    """Names of the project's modules that a parsed module imports (parents included); with
    `module_level_only`, only the imports that run when the module itself is imported."""
    found: set[str] = set()
    for node in tree.body if module_level_only else ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] == PACKAGE and module_file(src, name):
                found.update([name, *_parents(name)])
    return found


def _discovered(tree: ast.AST, own: str, src: Path) -> set[str]:
    """Every module of the packages this module's `Registry(...)` calls discover."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Registry"):
            continue
        package = node.args[1] if len(node.args) > 1 else None
        if isinstance(package, ast.Name) and package.id == "__name__":
            name = own
        elif isinstance(package, ast.Constant) and isinstance(package.value, str):
            name = package.value
        else:
            continue
        folder = src.joinpath(*name.split("."))
        for path in folder.glob("*.py"):
            found.add(f"{name}.{path.stem}" if path.stem != "__init__" else name)
    return found


def entry_module(module: str, src: Path) -> str:
    """The module `python -m <module>` runs: a package's `__main__`, else the module itself."""
    main = f"{module}.__main__"
    is_package = module_file(src, module).name == "__init__.py"
    return main if is_package and module_file(src, main) else module


def import_closure(module: str, src: Path) -> set[Path]:
    """Files of every project module that running `python -m <module>` can import."""
    module = entry_module(module, src)
    todo, seen = [module, *_parents(module)], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_imports_of(name, src) - seen)
    return {module_file(src, name) for name in seen}


_IMPORTS: dict[tuple, set[str]] = {}


def _imports_of(name: str, src: Path) -> set[str]:
    """Modules that module `name` imports or discovers, once per version of its file and of
    its folder (a registry discovers the modules of its own folder)."""
    path = module_file(src, name)
    stat = path.stat()
    folder = path.parent.stat().st_mtime_ns  # a module added to a discovered package
    key = (path, stat.st_mtime_ns, stat.st_size, folder)
    if key not in _IMPORTS:
        tree = ast.parse(path.read_text(), str(path))
        own = name if path.name == "__init__.py" else name.rpartition(".")[0]
        _IMPORTS[key] = imported(tree, src) | _discovered(tree, own, src)
    return _IMPORTS[key]


def stage_module(cmd: str) -> str | None:
    parts = cmd.split()
    if parts[:2] == ["python", "-m"] and parts[2].startswith(f"{PACKAGE}."):
        return parts[2]
    return None


def _covers(dep: Path, path: Path) -> bool:
    return dep == path or dep in path.parents


def check_deps(stages: dict, root: Path) -> dict[str, dict[str, list[str]]]:
    """Per stage: source files it imports that no dep covers (`missing`), and source deps that
    cover nothing it imports (`unused`). Empty lists everywhere mean dvc.yaml is right."""
    src = root / "src"
    report = {}
    for name, stage in stages.items():
        module = stage_module(stage["cmd"])
        if module is None:
            continue
        closure = import_closure(module, src)
        deps = [root / d for d in stage.get("deps", []) if str(d).startswith("src/")]
        missing = [p for p in closure if not any(_covers(d, p) for d in deps)]
        unused = [d for d in deps if not any(_covers(d, p) for p in closure)]
        report[name] = {
            "missing": sorted(str(p.relative_to(root)) for p in missing),
            "unused": sorted(str(d.relative_to(root)) for d in unused),
        }
    return report
