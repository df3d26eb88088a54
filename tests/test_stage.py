"""`run_stage`: one line and exit 2 for a problem the user can fix, params.yaml watched while a
stage runs, a missing pipeline input named with the stage that makes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedtune.errors import EmbedtuneError
from embedtune.stage import run_stage

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
