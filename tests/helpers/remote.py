"""A small git + DVC repository for `embedtune remote`, and what its git remote points at."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_small_repo(folder: Path) -> Path:
    """A git repository with a bare `.dvc/` as `dvc init` makes it."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(folder)], check=True)
    (folder / ".dvc").mkdir()
    (folder / ".dvc/config").write_text("[core]\n    analytics = false\n")
    (folder / ".dvc/.gitignore").write_text("/config.local\n/tmp\n/cache\n")
    return folder


def git_remote_url(repo: Path) -> str:
    return subprocess.run(
        ["git", "remote", "get-url", "origin"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
