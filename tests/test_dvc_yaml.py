"""dvc.yaml against the source: every stage depends on exactly what it imports and reads."""

from __future__ import annotations

import ast
import copy
import importlib

import pytest
import yaml

from tests.helpers import ROOT
from tests.helpers.stage_deps import (
    check_deps,
    entry_module,
    import_closure,
    stage_module,
)

SRC = ROOT / "src"
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _relative(paths) -> set[str]:
    return {str(p.relative_to(SRC / "embedtune")) for p in paths}


def test_every_stage_depends_on_exactly_its_import_closure():
    report = check_deps(STAGES, ROOT)
    assert set(report) == set(STAGES)
    assert all(not r["missing"] and not r["unused"] for r in report.values()), report


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_removing_any_source_dependency_is_caught(stage):
    sources = [d for d in STAGES[stage]["deps"] if d.startswith("src/")]
    for removed in sources:
        stages = copy.deepcopy(STAGES)
        stages[stage]["deps"].remove(removed)
        missing = check_deps(stages, ROOT)[stage]["missing"]
        assert missing and all(m.startswith(removed) for m in missing), (removed, missing)


def test_a_dependency_the_stage_does_not_import_is_caught():
    stages = copy.deepcopy(STAGES)
    stages["embed"]["deps"].append("src/embedtune/synth/llm")
    assert check_deps(stages, ROOT)["embed"]["unused"] == ["src/embedtune/synth/llm"]


def test_closure_follows_lazy_imports_and_registry_discovery():
    train = _relative(import_closure("embedtune.train", SRC))
    assert "train/methods/full_training.py" in train  # imported inside FullMethod.train only
    assert "train/methods/two_layer.py" in train  # found by the METHODS registry, never imported
    assert "train/losses/cached_mnrl.py" in train  # found by the LOSSES registry
    assert "retrieval/metrics/ndcg.py" in train  # found by the METRICS registry
    assert not any(p.startswith("synth/") for p in train)
    assert "retrieval/beir.py" not in train  # so editing the BEIR reader reruns eval only
    download = _relative(import_closure("embedtune.download", SRC))
    assert download == {
        "__init__.py", "reading/__init__.py", "reading/bad_documents.py", "reading/readers.py",
        "config.py", "download/__init__.py", "download/__main__.py", "download/pdf.py",
        "download/sources.py", "errors.py", "io.py", "stage.py",
    }  # fmt: skip


def test_a_package_stage_is_its_main_module_and_what_that_imports():
    export = _relative(import_closure("embedtune.export", SRC))
    assert {"export/__init__.py", "export/__main__.py", "export/card.py"} <= export
    assert not any(p.startswith("synth/") for p in export)  # it reports the llm section only


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_params_are_the_sections_its_module_reads(stage):
    module = importlib.import_module(entry_module(stage_module(STAGES[stage]["cmd"]), SRC))
    assert sorted(STAGES[stage]["params"]) == sorted(module.PARAMS)


def test_a_stage_cannot_read_a_section_it_does_not_list(tmp_path):
    from embedtune.config import EmbedConfig, load_params

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    params = load_params({"embed": EmbedConfig}, tmp_path / "params.yaml")
    with pytest.raises(AttributeError):
        params.train  # noqa: B018


def _all_modules() -> dict[str, object]:
    modules = {}
    for path in sorted((SRC / "embedtune").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


STAGE_PACKAGES = {
    "download", "chunk", "synth", "embed", "mine", "train", "select", "eval", "export",
}  # fmt: skip


def test_each_stage_is_a_package_run_by_its_main_module():
    for stage in sorted(STAGES):
        module = stage_module(STAGES[stage]["cmd"])
        assert module == f"embedtune.{stage}" and stage in STAGE_PACKAGES
        assert (SRC / "embedtune" / stage / "__main__.py").is_file(), stage


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 60


def test_modules_and_functions_stay_small():
    too_long = []
    for name, path in _all_modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert not too_long, too_long
