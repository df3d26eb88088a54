"""`run_stage`: one line and exit 2 for a problem the user can fix, params.yaml watched while a
stage runs, a missing pipeline input named with the stage that makes it, every output checked
writable and a killed run's temporaries removed before the stage works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from embedtune import io
from embedtune.errors import EmbedtuneError
from embedtune.stage import run_stage
from tests.helpers import ROOT, cli_env
from tests.helpers.system import unprivileged

CHANGED = (
    "embedtune train: error: params.yaml changed while train ran (another run in this "
    "workspace?): use `dvc exp run --queue` for parallel runs\n"
)


def fails(capsys, name: str, body, **kwargs) -> str:
    """Run `body` as stage `name`; it must exit 2 with one line on stderr, which is returned."""
    with pytest.raises(SystemExit) as info:
        run_stage(name, body, **kwargs)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    return err


def test_an_embedtune_error_is_one_line(capsys):
    def body():
        raise EmbedtuneError("data.timeout_s must be greater than 0")

    assert fails(capsys, "download", body) == (
        "embedtune download: error: data.timeout_s must be greater than 0\n"
    )


def test_params_yaml_rewritten_while_the_stage_runs_fails_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("train:\n  lr: 0.001\n")
    done = []

    def body():  # another `dvc exp run` composes its own params.yaml midway
        Path("params.yaml").write_text("train:\n  lr: 1.0e+30\n")
        done.append(True)

    assert fails(capsys, "train", body) == CHANGED
    assert done  # the stage ran to its end; only then is the change seen


def test_params_yaml_unchanged_or_rewritten_alike_passes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("seed: 1\n")
    run_stage("train", lambda: Path("params.yaml").write_text("seed: 1\n"))
    assert capsys.readouterr().err == ""


def test_a_stage_that_writes_params_yaml_is_not_watched(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("seed: 1\n")
    run_stage("compose", lambda: Path("params.yaml").write_text("seed: 2\n"), reads_params=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        (
            "data/chunks/train.jsonl",
            "data/chunks/train.jsonl not found: run `dvc repro chunk` first",
        ),
        ("data/raw/train/a.pdf", "data/raw/train/a.pdf not found: run `dvc repro download` first"),
        ("models/tuned/config.json", "models/tuned/config.json not found: run `dvc repro train`"),
        ("data/elsewhere.txt", "data/elsewhere.txt not found\n"),
    ],
)
def test_a_missing_pipeline_input_names_the_stage_that_makes_it(
    tmp_path, monkeypatch, capsys, missing, message
):
    monkeypatch.chdir(tmp_path)
    for path in (missing, tmp_path / missing):  # as the stage named it, relative or not
        err = fails(capsys, "synth", lambda p=path: Path(p).read_text())
        assert err.startswith("embedtune synth: error: ") and message in err


def test_other_missing_files_keep_their_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError):
        run_stage("synth", lambda: Path("src/nothing.py").read_text())
    with pytest.raises(FileNotFoundError):
        run_stage("synth", lambda: (tmp_path.parent / "data" / "x.json").read_text())


@pytest.mark.parametrize(
    ("stage", "read_only"),
    [("select", "models"), ("eval", "metrics"), ("export", "models"), ("train", "metrics/train")],
)
def test_an_output_folder_it_cannot_write_is_refused_before_the_work(
    tmp_path, monkeypatch, capsys, stage, read_only
):
    for folder in ("models", "metrics", "metrics/train"):  # dvclive writes in metrics/train
        (tmp_path / folder).mkdir()
        (tmp_path / folder).chmod(0o777)  # writable by the user `unprivileged` runs as
    (tmp_path / read_only).chmod(0o555)
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    worked = []
    with unprivileged(tmp_path):
        err = fails(capsys, stage, lambda: worked.append(stage), reads_params=False)
    assert err == (
        f"embedtune {stage}: error: {read_only}/ is not writable (Permission denied): make it "
        f"writable (e.g. `chmod u+w {read_only}`) and run again\n"
    )
    assert worked == [] and sorted(tmp_path.rglob("*")) == before


def test_a_missing_output_folder_is_checked_where_it_would_be_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_stage("eval", lambda: None, reads_params=False)
    assert list(tmp_path.iterdir()) == []  # nothing made to check it


# A process killed inside an atomic write of the export folder, as `kill -9` during `export`.
KILLED_WRITE = """
import time
from embedtune import io
with io.atomic_folder(io.EXPORT_DIR) as folder:
    (folder / "model").mkdir()
    print(folder, flush=True)
    time.sleep(60)
"""


def test_a_killed_runs_temporaries_are_removed_by_the_next_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITE],
        env=cli_env(ROOT / "src"),
        stdout=subprocess.PIPE,
        text=True,
    )
    left = Path(proc.stdout.readline().strip())
    proc.kill()
    proc.wait()
    assert left.parent == io.EXPORT_DIR.parent and left.name.startswith(".export.")
    assert (left / "model").is_dir()
    theirs = tmp_path / "models" / ".retriever.abc123"  # another stage's: not export's to touch
    theirs.mkdir()
    run_stage("export", lambda: None, reads_params=False)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [".retriever.abc123"]
    assert (
        f"embedtune export: removed {left}, left by an interrupted run" in capsys.readouterr().out
    )
