"""Compose conf/ into params.yaml without running anything, exactly as `dvc exp run` does.

Usage: python -m embedtune.compose [OVERRIDE ...]    e.g. python -m embedtune.compose experiment=cpu

`dvc exp run` composes conf/ itself; this is for checking the result, or regenerating the
committed params.yaml after editing conf/ (`make params`).
"""

from __future__ import annotations

import sys
import urllib.parse
from pathlib import Path

from embedtune.errors import EmbedtuneError
from embedtune.io import CONF_DIR, LOCK_FILE, PARAMS_FILE
from embedtune.stage import run_stage


def compose(overrides: list[str], conf_dir: Path = CONF_DIR, output: Path = PARAMS_FILE) -> None:
    """Compose `conf_dir/config.yaml` with Hydra `overrides` into `output` (DVC's own writer)."""
    import yaml
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not (conf_dir / "config.yaml").is_file():
        raise EmbedtuneError(f"{conf_dir / 'config.yaml'} not found: run from the repository root")
    try:
        compose_and_dump(output, str(conf_dir.resolve()), None, "config", ".", overrides)
    except (HydraException, OmegaConfBaseException) as err:
        first_line = str(err).strip().splitlines()[0]
        raise EmbedtuneError(f"cannot compose {conf_dir}/ with {overrides}: {first_line}") from None
    except yaml.YAMLError as err:
        raise EmbedtuneError(yaml_problem(err, conf_dir)) from None


def yaml_problem(err, conf_dir: Path) -> str:
    """One line for a conf/ file that is not valid YAML: the file (as under `conf_dir`), the
    line, what the parser expected."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is None:
        return f"{conf_dir}/ holds invalid YAML ({str(err).splitlines()[0]}): fix that file"
    where = Path(mark.name)
    if where.is_relative_to(conf_dir.resolve()):
        where = conf_dir / where.relative_to(conf_dir.resolve())
    problem = err.problem or (str(err).splitlines() or ["a syntax error"])[0]
    return f"{where} line {mark.line + 1}: invalid YAML ({problem}): fix that line"


def all_schemas() -> dict:
    """The schema of every section of params.yaml (plug-in sections: the part they name)."""
    from embedtune import config
    from embedtune.synth.llm.base import backend_config
    from embedtune.train.methods.base import method_config

    return {
        "seed": int,
        "data": config.DataConfig,
        "chunk": config.ChunkConfig,
        "llm": backend_config,
        "synth": config.SynthConfig,
        "embed": config.EmbedConfig,
        "mine": config.MineConfig,
        "train": method_config,
        "retrieve": config.RetrieveConfig,
        "eval": config.EvalConfig,
    }


def composed_params(overrides: list[str], folder: Path, conf_dir: Path = CONF_DIR):
    """Compose `overrides` into `folder/params.yaml` and return every section validated."""
    from embedtune.config import load_params

    compose(overrides, conf_dir=conf_dir, output=folder / "params.yaml")
    return load_params(all_schemas(), folder / "params.yaml")


def preset(overrides: list[str]) -> str | None:
    """The `experiment=` override, None for the default (GPU) recipe."""
    return next((o for o in overrides if o.startswith("experiment=")), None)


def recipe(overrides: list[str], data: dict) -> str:
    """What was composed, in words: the preset (or the default GPU recipe) and the documents."""
    name = preset(overrides) or "the default recipe (GPU: no experiment preset)"
    sources = data["train"] + data["validation"]
    if data.get("local_dir"):
        documents = f"the documents in {data['local_dir']}"
    elif all(s.get("pydoc_topics") for s in sources):
        documents = f"{len(sources)} PDFs rendered from Python's reference (offline)"
    else:
        hosts = {urllib.parse.urlparse(s.get("url") or "").netloc or "local" for s in sources}
        documents = f"{len(sources)} documents downloaded from {', '.join(sorted(hosts))}"
    return f"{name}; {documents}"


def changed_sections(lock: Path, params: dict) -> list[str]:
    """The sections of `params` that differ from what the results in `lock` (dvc.lock) were
    made with; [] without results."""
    from dvc.utils.serialize import parse_yaml  # as DVC reads it: `lr: 2e-05` is a number

    if not lock.is_file():
        return []
    stages = (parse_yaml(lock.read_text(), str(lock)) or {}).get("stages", {})
    used: dict = {}
    for stage in stages.values():
        used.update(stage.get("params", {}).get(str(PARAMS_FILE), {}))
    return [name for name, value in used.items() if params.get(name, value) != value]


def main() -> None:
    from embedtune.config import read_params

    overrides = sys.argv[1:]
    compose(overrides)
    params = read_params(PARAMS_FILE)
    print(f"wrote {PARAMS_FILE}: {recipe(overrides, params['data'])}")
    if preset(overrides) is None:
        print(
            "note: on a CPU machine without the hub, compose the offline preset instead: "
            "make params OVERRIDES=experiment=cpu"
        )
    changed = changed_sections(LOCK_FILE, params)
    if changed:
        print(
            f"warning: {LOCK_FILE} holds results made with other {', '.join(changed)} "
            "settings: the next `dvc repro` replaces them (they stay in DVC's cache; "
            "`dvc exp run` keeps each run as an experiment)"
        )


if __name__ == "__main__":
    run_stage("compose", main, reads_params=False)  # it writes params.yaml
