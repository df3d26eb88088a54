"""Stage `select` for real in a temporary working directory: the candidates are scored on the
held-out training questions only, and the one the selection rule ships is written."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import embedtune.select.__main__ as select_stage
from embedtune import io
from embedtune.embeddings import SplitEmbeddings, save_embeddings
from embedtune.mine.mined import MINED_FILE, Mined
from embedtune.retrieval.selection import heldout_split
from embedtune.stage import run_stage
from embedtune.train.methods.adapters import AdapterModel
from embedtune.train.methods.base import save_tuned
from embedtune.train.methods.linear import LinearAdapter
from tests.helpers import cfg

# Forty near-identical maintenance records told apart by a unit code: a small dense model
# barely separates them, BM25 matches the code exactly.
CODES = [f"{chr(65 + i % 26)}{chr(75 + i % 13)}{4000 + 37 * i}" for i in range(40)]
TRAIN = {
    "queries": {f"q{i}": f"When was unit {c} last serviced?" for i, c in enumerate(CODES)},
    "corpus": {
        f"c{i}": f"Unit {code}: the pump was serviced and its pressure checked in week {i % 7 + 1}."
        for i, code in enumerate(CODES)
    },
    "relevant_docs": {f"q{i}": [f"c{i}"] for i in range(len(CODES))},
    "mode": "text",
}  # fmt: skip
TRAIN_SETTINGS = {"holdout_fraction": 0.5, "holdout_min_questions": 0, "selection_confidence": 0.9}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    io.write_json(io.QA_DIR / "train.json", TRAIN)
    g = torch.Generator().manual_seed(0)
    random = SplitEmbeddings(
        list(TRAIN["queries"]), torch.randn(40, 384, generator=g),
        list(TRAIN["corpus"]), torch.randn(40, 384, generator=g),
    )  # fmt: skip
    save_embeddings(io.EMBEDDINGS_DIR / "train.safetensors", random)
    save_tuned(AdapterModel("adapter_linear", LinearAdapter(384)), io.TUNED_DIR)  # identity
    io.write_json(MINED_FILE, Mined([], {}, {q: [] for q in TRAIN["queries"]}).as_dict())
    write_params(tmp_path)
    return tmp_path


def write_params(folder, **retrieve_updates) -> None:
    params = {
        "seed": 0,
        "embed": cfg("embed").model_dump(),
        "train": cfg("train", **TRAIN_SETTINGS).model_dump(),
        "retrieve": {**cfg("retrieve").model_dump(), **retrieve_updates},
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


def read_json(path):
    return json.loads(path.read_text())


def test_ships_what_the_heldout_training_questions_prefer(workdir, capsys):
    select_stage.main()
    verdict = read_json(workdir / "metrics/select.json")
    _, held = heldout_split(TRAIN, 0.5, 0)
    assert verdict["heldout_questions"] == len(held) == 20
    means = verdict["mrr@10"]
    assert means["tuned"] == means["base"] < 1.0  # the identity adapter is the base model
    assert means["bm25"] == 1.0  # the unit code finds every chunk
    assert verdict["best"] == "bm25" and verdict["shipped"] == "bm25"
    assert verdict["gain_mrr@10"]["low"] > 0
    shipped = read_json(io.RETRIEVER_FILE)
    assert shipped == {
        "retriever": "bm25",
        "dense": None,
        "fusion": None,
        "bm25": cfg("retrieve").bm25.model_dump(),
    }
    out = capsys.readouterr().out
    assert "  bm25: held-out mrr@10 1.0000" in out
    assert "shipped: bm25 (the selection rule)" in out


def test_ship_forces_a_candidate_and_its_description(workdir, capsys):
    write_params(workdir, ship="tuned+bm25:convex50")
    select_stage.main()
    verdict = read_json(workdir / "metrics/select.json")
    assert verdict["best"] == "bm25" and verdict["shipped"] == "tuned+bm25:convex50"
    assert verdict["forced"] is True
    shipped = read_json(io.RETRIEVER_FILE)
    assert shipped["dense"] == "tuned" and shipped["fusion"] == {
        "kind": "convex",
        "dense_weight": 0.5,
    }
    assert "forced by retrieve.ship" in capsys.readouterr().out


def test_no_fusions_and_selection_by_the_mean(workdir):
    write_params(workdir, dense=[], fusion={})
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["train"]["selection_confidence"] = 0.0  # the best mean gain, no interval
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    select_stage.main()
    verdict = read_json(workdir / "metrics/select.json")
    assert set(verdict["mrr@10"]) == {"base", "tuned", "bm25"}
    assert verdict["shipped"] == "bm25" and verdict["gain_mrr@10"]["low"] is None


def test_without_heldout_questions_the_tuned_model_is_shipped(workdir):
    write_params(workdir)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["train"]["holdout_fraction"] = 0.0
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    select_stage.main()
    verdict = read_json(workdir / "metrics/select.json")
    assert verdict == {"best": None, "shipped": "tuned", "heldout_questions": 0}
    assert read_json(io.RETRIEVER_FILE)["retriever"] == "tuned"


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ({"ship": "bm24"}, "retrieve.ship='bm24' is no candidate"),
        (
            {"fusion": {"rrf": [{"k": -1}]}},
            "params.yaml: retrieve.fusion.rrf[0].k must be greater than 0",
        ),
        ({"fusion": {"max": [{}]}}, "retrieve.fusion='max' is not known"),
        ({"dense": ["gist"]}, "params.yaml: retrieve.dense[0] must be 'base' or 'tuned'"),
    ],
)
def test_bad_settings_fail_before_any_model_loads(workdir, capsys, updates, message):
    write_params(workdir, **updates)
    (io.TUNED_DIR / "config.json").unlink()
    with pytest.raises(SystemExit):
        run_stage("select", select_stage.main)
    err = capsys.readouterr().err
    assert err.startswith("embedtune select: error: ") and err.count("\n") == 1
    assert message in err
    assert not io.RETRIEVER_DIR.exists()
