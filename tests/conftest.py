"""Shared fixtures: the repository root and an environment for running the real CLIs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
