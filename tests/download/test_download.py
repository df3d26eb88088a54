"""The download stage: `python -m embedtune.download` in a working directory, and data=local
with the real dvc CLI (the documents in documents/ are a dependency of the pipeline)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import embedtune.download.__main__ as download
from embedtune.compose import compose
from embedtune.config import DataConfig
from tests.helpers import ROOT, cli_env, copy_project, run_cli
from tests.helpers.documents import PAYLOAD, PAYLOAD_SHA, serve


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Base URL of an HTTP server on 127.0.0.1 serving doc.pdf."""
    folder = tmp_path_factory.mktemp("served")
    (folder / "doc.pdf").write_bytes(PAYLOAD)
    with serve(folder) as url:
        yield url


def test_stage_params():
    assert download.PARAMS == {"data": DataConfig}


def write_params(folder: Path, data: dict) -> None:
    """A params.yaml holding only the `data` section: the one the stage lists."""
    compose(["experiment=cpu"], conf_dir=ROOT / "conf", output=folder / "composed.yaml")
    section = yaml.safe_load((folder / "composed.yaml").read_text())["data"]
    (folder / "params.yaml").write_text(yaml.safe_dump({"data": {**section, **data}}))


def test_stage_writes_documents_and_manifest(server, tmp_path, monkeypatch, capsys):
    sources = {
        "train": [{"name": "doc.pdf", "url": f"{server}/doc.pdf", "sha256": PAYLOAD_SHA}],
        "validation": [{"name": "lambda.pdf", "pydoc_topics": ["lambda"]}],
    }
    write_params(tmp_path, sources)
    monkeypatch.chdir(tmp_path)
    download.main()
    rendered = (tmp_path / "data/raw/validation/lambda.pdf").read_bytes()
    assert (tmp_path / "data/raw/train/doc.pdf").read_bytes() == PAYLOAD
    manifest = json.loads((tmp_path / "data/manifest.json").read_text())
    assert manifest == {
        "train": [
            {
                "name": "doc.pdf",
                "url": f"{server}/doc.pdf",
                "size": len(PAYLOAD),
                "sha256": PAYLOAD_SHA,
            }
        ],
        "validation": [
            {
                "name": "lambda.pdf",
                "url": "pydoc:lambda",
                "size": len(rendered),
                "sha256": hashlib.sha256(rendered).hexdigest(),
            }
        ],
    }
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(
        rf"train\s+doc\.pdf\s+{len(PAYLOAD):,} B  sha256 {PAYLOAD_SHA[:12]}", lines[0]
    )
    assert lines[1].startswith("validation lambda.pdf")


def run_stage(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "embedtune.download"],
        cwd=cwd,
        env=cli_env(ROOT / "src"),
        capture_output=True,
        text=True,
    )


def test_stage_failure_is_one_line_and_keeps_earlier_results(server, tmp_path):
    (tmp_path / "data/raw/train").mkdir(parents=True)
    (tmp_path / "data/raw/train/old.pdf").write_bytes(b"earlier run")
    sources = {
        "train": [{"name": "doc.pdf", "url": f"{server}/doc.pdf"}],
        "validation": [{"name": "gone.pdf", "url": f"{server}/gone.pdf"}],
    }
    write_params(tmp_path, sources)
    proc = run_stage(tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (
        f"embedtune download: error: {server}/gone.pdf: HTTP 404 File not found "
        "[data.validation[0] in params.yaml]\n"
    )
    assert proc.stdout == ""
    assert not (tmp_path / "data/manifest.json").exists()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["raw"]
    assert (tmp_path / "data/raw/train/old.pdf").read_bytes() == b"earlier run"


def test_stage_refuses_bad_params_in_one_line(tmp_path):
    write_params(tmp_path, {"timeout_s": -1})
    proc = run_stage(tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (
        "embedtune download: error: params.yaml: data.timeout_s must be greater than 0, got -1\n"
    )
    assert not (tmp_path / "data").exists()


def test_stage_without_params(tmp_path):
    proc = run_stage(tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("embedtune download: error: params.yaml not found: run `dvc")
    assert len(proc.stderr.splitlines()) == 1


# --- data=local with the real dvc CLI ----------------------------------------------------------

DOCS = {
    "loops.txt": "A for loop runs its body once for every item of a sequence.",
    "sets.html": "<html><body><p>A set holds <b>unique</b> items.</p></body></html>",
    "guide/dicts.md": "# Dicts\n\nA dict maps keys to values.",
}


def run_download(repo: Path):
    return run_cli(["dvc", "exp", "run", "download", "-S", "data=local"], repo)


def raw_texts(repo: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (repo / "data/raw").rglob("*") if p.is_file()}


@pytest.mark.slow
def test_editing_a_local_document_reruns_download(tmp_path):
    repo = copy_project(tmp_path / "repo")
    for name, text in DOCS.items():
        (repo / "documents" / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / "documents" / name).write_text(text)
    assert "Running stage 'download'" in run_download(repo).stdout
    assert sorted(raw_texts(repo)) == ["dicts.md", "loops.txt", "sets.html"]
    assert "Stage 'download' didn't change" in run_download(repo).stdout

    (repo / "documents/loops.txt").write_text("A while loop runs while its condition is true.")
    assert "modified:" in run_cli(["dvc", "status", "download"], repo).stdout
    assert "Running stage 'download'" in run_download(repo).stdout
    assert "A while loop runs" in raw_texts(repo)["loops.txt"]
