"""Plain helpers shared by the test modules (fixtures live in conftest.py files): the repository
root, configs composed from conf/, and running the real CLIs in a copy of the project.

The modules beside this one hold the helpers of one topic each (`tests.helpers.methods`, ...).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]  # tests/helpers/__init__.py -> the repository


@functools.cache
def composed(*overrides: str) -> SimpleNamespace:
    """Every section of params.yaml as `dvc exp run -S` would compose it, validated (cached)."""
    from embedtune.compose import composed_params

    folder = Path(tempfile.mkdtemp(prefix="embedtune-params-"))
    try:
        return composed_params(list(overrides), folder, ROOT / "conf")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def cfg(section: str, *overrides: str, **updates):
    """One section of the cpu preset (with Hydra `overrides`; the `train` group is the linear
    adapter unless they pick another), `updates` applied and validated, so a misspelt key in a
    test fails as it would in params.yaml.

    Example: cfg("train", "train=full", epochs=1, hard_negatives=2)
    """
    if not any(o.startswith("train=") for o in overrides):  # the adapter: fast to train
        overrides = ("train=adapter_linear_cpu", *overrides)
    base = getattr(composed("experiment=cpu", *overrides), section)
    return type(base).model_validate({**base.model_dump(), **updates}, strict=True)


def cli_env(src: Path) -> dict[str, str]:
    """Environment for `dvc`/`git`/`python -m embedtune.*` in a temporary repo copy."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(src)
    # Each temporary repo gets its own answer cache beside it, never the user's ~/.cache.
    env["EMBEDTUNE_CACHE_DIR"] = f"{src.parent}-cache"
    env.update(
        DVC_NO_ANALYTICS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        GIT_AUTHOR_NAME="embedtune tests",
        GIT_AUTHOR_EMAIL="tests@embedtune.invalid",
        GIT_COMMITTER_NAME="embedtune tests",
        GIT_COMMITTER_EMAIL="tests@embedtune.invalid",
    )
    return env


def run_cli(
    args: list[str], cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a real command line in `cwd`; on an unexpected failure show its whole output."""
    full_env = {**cli_env(cwd / "src"), **(env or {})}
    proc = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


PIPELINE_OUTPUTS = ("data/", "models/", "metrics/", "dvc.lock")
# `dvc exp run` overrides for the cpu preset shrunk to a few chunks with short answers; a
# held-out slice of one chunk would pick the untrained adapter, so none is held out.
SHRUNK = [
    *("-S", "experiment=cpu"),
    *("-S", "train=adapter_linear_cpu"),  # seconds to train; the preset's `full` takes minutes
    *("-S", "synth.max_chunks=8"),
    *("-S", "llm.max_new_tokens=48"),
    *("-S", "train.holdout_fraction=0"),
]


def project_files() -> list[str]:
    """The project's files as git sees them, without what a pipeline run in this checkout made."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [f for f in listed if not f.startswith(PIPELINE_OUTPUTS) and (ROOT / f).is_file()]


def copy_project(dest: Path) -> Path:
    """Copy the project into `dest` and make it a fresh git repository with one commit."""
    for name in project_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    run_cli(["git", "init", "-q", "-b", "main"], dest)
    run_cli(["git", "add", "-A"], dest)
    run_cli(["git", "commit", "-qm", "project"], dest)
    return dest


def _no_dvc_tmp(folder: str, names: list[str]) -> list[str]:
    return ["tmp"] if Path(folder).name == ".dvc" else []  # locks and state: DVC remakes them


def copy_run(template: Path, dest: Path) -> Path:
    """A copy of the repository `template` (git history, DVC cache, workspace) at `dest`, with
    its answer cache (`cli_env`), so a stage that asks the LLM again finds what it answered."""
    shutil.copytree(template, dest, symlinks=True, ignore=_no_dvc_tmp, dirs_exist_ok=True)
    answers = Path(f"{template}-cache")
    if answers.is_dir():
        shutil.copytree(answers, f"{dest}-cache", dirs_exist_ok=True)
    return dest
