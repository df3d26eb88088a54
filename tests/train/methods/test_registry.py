"""A training method is one module plus one YAML file: registered from this test alone, a toy
method runs through the real `train` and `eval` stage entry points, with nothing else edited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
import torch
import yaml
from pydantic import Field

from embedtune import io
from embedtune.config import EmbedConfig
from embedtune.embeddings import embed_dataset, save_embeddings
from embedtune.errors import EmbedtuneError
from embedtune.mine.mined import MINED_FILE, Mined
from embedtune.train.methods.base import METHODS, Method, TrainConfig, TrainingInputs, TrainingLog
from tests.helpers import ROOT, cfg

DATASETS = {
    "train": {
        "queries": {"q1": "How do loops repeat?", "q2": "What does import load?"},
        "corpus": {"c1": "A for loop repeats its body.", "c2": "Import loads a module."},
        "relevant_docs": {"q1": ["c1"], "q2": ["c2"]},
        "mode": "text",
    },
    "validation": {
        "queries": {"v1": "What does assert check?", "v2": "When does while stop?"},
        "corpus": {"d1": "Assert checks a condition.", "d2": "A while loop stops when false."},
        "relevant_docs": {"v1": ["d1"], "v2": ["d2"]},
        "mode": "text",
    },
}


class ToyConfig(TrainConfig):
    method: Literal["toy"]
    gain: float = Field(gt=0)  # a key of the toy method's own


class ToyModel:
    """Multiplies query embeddings by `gain`: cosine ranking unchanged, so tuned == base."""

    method = "toy"

    def __init__(self, gain: float):
        self.gain = gain

    def encode_queries(self, texts: list[str], base: torch.Tensor) -> torch.Tensor:
        return base * self.gain

    def encode_corpus(self, texts: list[str], base: torch.Tensor) -> torch.Tensor:
        return base

    def save(self, folder: Path) -> None:
        io.write_json(folder / "config.json", {"method": self.method, "gain": self.gain})


class ToyMethod(Method):
    Config = ToyConfig

    def train(self, inputs: TrainingInputs, cfg: ToyConfig, seed: int, log: TrainingLog):
        assert inputs.embeddings().queries.shape[0] == 2  # the cached base embeddings
        assert inputs.question_split(cfg, seed) == (["q1"], [])  # q2 was set aside by `mine`
        log.step(1, 0.5)
        log.epoch(1, 1, {"mrr@10": 1.0})
        log.selected(1, 1, {"diff": 0.5, "low": 0.25, "high": 0.75})
        return ToyModel(cfg.gain)

    def load(self, folder: Path, embed: EmbedConfig | None = None) -> ToyModel:
        return ToyModel(json.loads((folder / "config.json").read_text())["gain"])


@pytest.fixture
def toy_method():
    METHODS.register("toy")(ToyMethod)
    yield ToyMethod
    METHODS.unregister("toy")


@pytest.fixture
def workdir(tmp_path, monkeypatch, minilm) -> Path:
    """A folder with the QA data and base embeddings the train and eval stages read."""
    embed = cfg("embed")
    for split, dataset in DATASETS.items():
        io.write_json(tmp_path / io.QA_DIR / f"{split}.json", dataset)
        emb = embed_dataset(minilm, dataset, embed)
        save_embeddings(tmp_path / io.EMBEDDINGS_DIR / f"{split}.safetensors", emb)
    io.write_json(tmp_path / MINED_FILE, Mined(["q2"], {}, {"q1": []}).as_dict())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_params(folder: Path, train: dict) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["embed"] = cfg("embed").model_dump()
    params["eval"]["bootstrap"] = 10
    params["train"] = train
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


TOY_TRAIN = {
    "method": "toy",
    "gain": 2.0,
    "lr": 0.1,
    "weight_decay": 0.0,
    "epochs": 1,
    "batch_size": 2,
    "holdout_fraction": 0.0,
    "holdout_min_questions": 0,
    "patience": 0,
    "selection_confidence": 0.95,
}


def test_a_method_registered_from_a_test_runs_train_retrieve_and_eval(toy_method, workdir):
    import embedtune.eval.__main__ as eval_stage
    import embedtune.select.__main__ as select_stage
    import embedtune.train.__main__ as train_stage

    write_params(workdir, TOY_TRAIN)
    train_stage.main()
    assert json.loads((workdir / "models/tuned/config.json").read_text()) == {
        "gain": 2.0,
        "method": "toy",
    }
    summary = json.loads((workdir / "metrics/train/metrics.json").read_text())
    assert summary["heldout"]["best_epoch"] == summary["heldout"]["kept_epoch"] == 1
    assert summary["heldout"]["gain_mrr@10"] == {"diff": 0.5, "low": 0.25, "high": 0.75}
    select_stage.main()
    eval_stage.main()
    metrics = json.loads((workdir / "metrics/eval.json").read_text())
    assert metrics["tuned"] == metrics["base"]  # a gain leaves cosine rankings as they were
    assert metrics["tuned"]["queries"] == 2
    assert metrics["shipped"]["retriever"] == "tuned"  # holdout_fraction 0: nothing to choose on


def test_the_method_validates_its_own_keys(toy_method, workdir):
    import embedtune.train.__main__ as train_stage

    write_params(workdir, {**TOY_TRAIN, "gain": -1.0})
    with pytest.raises(EmbedtuneError, match=r"train.gain must be greater than 0"):
        train_stage.main()
    write_params(workdir, {k: v for k, v in TOY_TRAIN.items() if k != "gain"})
    with pytest.raises(EmbedtuneError, match=r"missing key train.gain"):
        train_stage.main()


def test_without_registration_the_method_is_unknown(workdir):
    import embedtune.train.__main__ as train_stage

    write_params(workdir, TOY_TRAIN)
    with pytest.raises(EmbedtuneError, match=r"train.method='toy' is not known \(known: .*full"):
        train_stage.main()
