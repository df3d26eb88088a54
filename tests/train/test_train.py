"""The `train` stage, run for real in a temporary folder: params.yaml composed from conf/, the
training split on disk, the tuned model and dvclive's metrics written where dvc.yaml wants them."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

import embedtune.train.__main__ as train_module
from embedtune.errors import EmbedtuneError
from embedtune.mine.mined import MINED_FILE
from embedtune.train.methods.adapters import AdapterModel
from embedtune.train.methods.base import load_tuned
from embedtune.train.methods.full import FullModel
from tests.helpers import ROOT, run_cli
from tests.helpers.methods import synthetic, tiny_dataset
from tests.helpers.train import stage_folder, write_split

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_stage_declares_its_sections():
    assert set(train_module.PARAMS) == {"seed", "embed", "train"}  # never eval or validation


def test_stage_writes_adapter_and_dvclive_metrics(tmp_path, monkeypatch, capsys):
    (emb, dataset), _ = synthetic()
    stage_folder(
        tmp_path, ["train=adapter_2layer"], hidden_size=16, epochs=3, patience=0, batch_size=8
    )
    write_split(tmp_path, dataset, emb)
    monkeypatch.chdir(tmp_path)
    train_module.main()
    assert json.loads(Path("models/tuned/config.json").read_text())["method"] == "adapter_2layer"
    assert isinstance(load_tuned(Path("models/tuned")), AdapterModel)
    summary = json.loads(Path("metrics/train/metrics.json").read_text())
    assert set(summary) == {"loss", "heldout", "step"}
    assert set(summary["heldout"]) == {"mrr@10", "best_epoch", "kept_epoch", "gain_mrr@10"}
    assert summary["heldout"]["best_epoch"] in (1, 2, 3)
    plots = Path("metrics/train/plots/metrics")
    losses = list(csv.DictReader((plots / "loss.tsv").open(), delimiter="\t"))
    heldout = list(csv.DictReader((plots / "heldout" / "mrr@10.tsv").open(), delimiter="\t"))
    assert [int(row["step"]) for row in losses] == list(range(1, summary["step"] + 1))
    assert all(float(row["loss"]) > 0 for row in losses)
    per_epoch = summary["step"] // 3
    assert [int(row["step"]) for row in heldout] == [0, per_epoch, 2 * per_epoch, 3 * per_epoch]
    values = [float(row["mrr@10"]) for row in heldout]
    # The best epoch is the first of the highest trained ones; it is kept if it beats epoch 0
    # (the untrained adapter) beyond noise, and the gain says by how much.
    best = summary["heldout"]["best_epoch"]
    assert best == values.index(max(values[1:]), 1)
    gain = summary["heldout"]["gain_mrr@10"]
    assert gain["diff"] == pytest.approx(values[best] - values[0], abs=1e-4)
    assert summary["heldout"]["kept_epoch"] == (best if gain["low"] > 0 else 0)
    assert summary["heldout"]["mrr@10"] == values[-1]
    out = capsys.readouterr().out
    assert "epoch 0: held-out mrr@10" in out and "adapter_2layer saved to models/tuned" in out
    assert f"best epoch {best}: held-out mrr@10 {gain['diff']:+.4f}" in out
    assert not Path("dvc.yaml").exists()  # dvc.yaml is ours, not dvclive's


def test_stage_without_held_out_questions_has_no_best_epoch(tmp_path, monkeypatch):
    (emb, dataset), _ = synthetic()
    stage_folder(tmp_path, [], epochs=2, holdout_fraction=0.0, patience=0)
    write_split(tmp_path, dataset, emb)
    monkeypatch.chdir(tmp_path)
    train_module.main()
    summary = json.loads(Path("metrics/train/metrics.json").read_text())
    assert set(summary) == {"loss", "step"}
    assert load_tuned(Path("models/tuned")).method == "adapter_linear"


def test_stage_entry_point_trains_and_saves_full(tmp_path, monkeypatch):
    stage_folder(
        tmp_path,
        ["train=full"],
        epochs=1,
        batch_size=4,
        max_seq_length=64,
        holdout_fraction=0.25,
        holdout_min_questions=0,
    )
    write_split(tmp_path, tiny_dataset())  # no data/embeddings needed: a full fine-tune reads texts
    monkeypatch.chdir(tmp_path)
    train_module.main()
    assert json.loads(Path("models/tuned/config.json").read_text())["method"] == "full"
    summary = json.loads(Path("metrics/train/metrics.json").read_text())
    # Epoch 1 is the best trained epoch; with 3 held-out questions its gain is noise, so the
    # base model is kept (and saved as the tuned model).
    assert summary["step"] == 3 and summary["heldout"]["best_epoch"] == 1
    assert summary["heldout"]["kept_epoch"] == 0
    heldout = Path("metrics/train/plots/metrics/heldout/mrr@10.tsv").read_text().splitlines()
    assert len(heldout) == 3  # header, epoch 0, epoch 1
    assert isinstance(load_tuned(Path("models/tuned")), FullModel)


def test_stage_errors_are_one_line_problems(tmp_path, monkeypatch):
    (_, dataset), _ = synthetic()
    stage_folder(tmp_path, [], epochs=2)
    write_split(tmp_path, dataset)  # the embeddings are missing
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EmbedtuneError, match=r"^data/embeddings/train\.safetensors not found: run"):
        train_module.main()
    assert not Path("models/tuned").exists()
    Path(MINED_FILE).unlink()
    with pytest.raises(EmbedtuneError, match=r"^data/mined/train\.json not found: run `dvc repro"):
        train_module.main()
    stage_folder(tmp_path, [], lr=-1.0)
    with pytest.raises(EmbedtuneError, match=r"^params\.yaml: train\.lr must be greater than 0"):
        train_module.main()


def test_the_stage_command_line(tmp_path):
    """`python -m embedtune.train` as dvc runs it."""
    (emb, dataset), _ = synthetic()
    stage_folder(tmp_path, [], epochs=2, batch_size=16)
    write_split(tmp_path, dataset, emb)
    done = run_cli(
        [sys.executable, "-m", "embedtune.train"], tmp_path, env={"PYTHONPATH": str(ROOT / "src")}
    )
    assert "epoch 2: held-out mrr@10" in done.stdout
    assert "adapter_linear saved to models/tuned" in done.stdout
    assert load_tuned(tmp_path / "models" / "tuned").method == "adapter_linear"
    assert (tmp_path / "metrics" / "train" / "metrics.json").is_file()
