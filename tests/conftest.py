"""Shared fixtures: the repository root and an environment for running the real CLIs."""

from __future__ import annotations

import os
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


def run_cli(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a real command line in `cwd`; on an unexpected failure show its whole output."""
    proc = subprocess.run(args, cwd=cwd, env=cli_env(cwd / "src"), capture_output=True, text=True)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
