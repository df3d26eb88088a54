"""data=local with the real dvc CLI: the documents in docs/ are a dependency of the pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import copy_project, run_cli

pytestmark = pytest.mark.slow

DOCS = {
    "loops.txt": "A for loop runs its body once for every item of a sequence.",
    "sets.html": "<html><body><p>A set holds <b>unique</b> items.</p></body></html>",
    "guide/dicts.md": "# Dicts\n\nA dict maps keys to values.",
}


def run_download(repo: Path):
    return run_cli(["dvc", "exp", "run", "download", "-S", "data=local"], repo)


def raw_texts(repo: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (repo / "data/raw").rglob("*") if p.is_file()}


def test_editing_a_document_in_docs_reruns_download(tmp_path):
    repo = copy_project(tmp_path / "repo")
    for name, text in DOCS.items():
        (repo / "docs" / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / "docs" / name).write_text(text)
    assert "Running stage 'download'" in run_download(repo).stdout
    assert "Stage 'download' didn't change" in run_download(repo).stdout

    (repo / "docs/loops.txt").write_text("A while loop runs while its condition is true.")
    assert "modified:" in run_cli(["dvc", "status", "download"], repo).stdout
    assert "Running stage 'download'" in run_download(repo).stdout
    assert "A while loop runs" in raw_texts(repo)["loops.txt"]
