"""Method `nudge`: chunk embeddings moved towards their training questions (NUDGE-M and -N),
the step size picked on held-out training questions, unseen documents left as they were."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from embedtune.embeddings import SplitEmbeddings
from embedtune.errors import EmbedtuneError
from embedtune.retrieval.metrics import metric_at
from embedtune.retrieval.ranking import binary_qrels, rank
from embedtune.retrieval.selection import HELDOUT_NAME, heldout_split
from embedtune.train.methods.base import (
    TrainingInputs,
    TrainingLog,
    get_method,
    load_tuned,
    save_tuned,
)
from embedtune.train.methods.nudge import NudgeConfig, NudgeMethod, NudgeModel, nudge, text_key
from tests.helpers import cfg
from tests.helpers.methods import split

GRID = [0.0, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4]  # wide enough for NUDGE-M, whose moves are shorter
HOLDOUT = 0.25


def nudge_cfg(**updates) -> NudgeConfig:
    defaults = {
        "gammas": GRID,
        "holdout_fraction": HOLDOUT,
        "holdout_min_questions": 0,
        "selection_confidence": None,  # the best gamma wins: most tests are about the mechanics
    }
    return cfg("train", "train=nudge", **{**defaults, **updates})


def crossed_pairs(n_pairs: int = 8, per_chunk: int = 3, seed: int = 0):
    """Pairs of close chunks a = (e + 0.2 f), b = (e - 0.2 f), each pair in its own plane (e, f),
    whose questions lean the other way, (e - 0.4 f) for a and (e + 0.4 f) for b, plus a little
    noise: each question is near its chunk but nearer the other one. Moving a chunk towards its
    questions fixes its own questions, and moves it away from its partner's."""
    g = torch.Generator().manual_seed(seed)
    dim = 2 * n_pairs + 8
    eye = torch.eye(dim)
    corpus, queries, relevant = [], [], {}
    for k in range(n_pairs):
        e, f = eye[2 * k], eye[2 * k + 1]
        for sign in (1.0, -1.0):
            chunk = len(corpus)
            corpus.append(F.normalize(e + sign * 0.2 * f, dim=0))
            for _ in range(per_chunk):
                noise = torch.zeros(dim)
                noise[2 * n_pairs :] = 0.03 * torch.randn(8, generator=g)
                relevant[len(queries)] = [chunk]
                queries.append(F.normalize(e - sign * 0.4 * f + noise, dim=0))
    return split(torch.stack(queries), torch.stack(corpus), relevant)


def mrr(emb: SplitEmbeddings, corpus: torch.Tensor, dataset: dict, query_ids: list[str]) -> float:
    rows = [emb.query_ids.index(q) for q in query_ids]
    qrels = binary_qrels(query_ids, dataset["relevant_docs"])
    return metric_at(rank(emb.queries[rows], corpus, query_ids, emb.corpus_ids, qrels), "mrr", 10)


def texts(emb: SplitEmbeddings, dataset: dict) -> list[str]:
    return [dataset["corpus"][cid] for cid in emb.corpus_ids]


def train(emb, dataset, train_cfg, seed=0, log=None) -> NudgeModel:
    inputs = TrainingInputs(dataset, cfg("embed"), _embeddings=emb)
    return get_method("nudge").train(inputs, train_cfg, seed, log or TrainingLog())


# --- the closed forms ------------------------------------------------------------------------


def test_nudge_m_moves_by_gamma_towards_the_question_sum():
    d = F.normalize(torch.randn(50, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    g = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    moved = nudge(d, g, 0.3, "m")
    assert torch.allclose(moved - d, 0.3 * F.normalize(g, dim=-1), atol=1e-6)


@pytest.mark.parametrize("gamma", [0.05, 0.3, 1.0, 1.9, 2.5])
def test_nudge_n_is_the_best_unit_vector_within_gamma(gamma):
    gen = torch.Generator().manual_seed(2)
    d = F.normalize(torch.randn(40, 6, generator=gen), dim=-1)
    g = torch.randn(40, 6, generator=gen)
    moved = nudge(d, g, gamma, "n")
    assert torch.allclose(moved.norm(dim=-1), torch.ones(40), atol=1e-5)
    assert ((moved - d).norm(dim=-1) <= gamma + 1e-5).all()
    # No unit vector within gamma of d does better on g . x (10,000 random ones per row).
    step = gamma * torch.rand(40, 10_000, 1, generator=gen)
    direction = F.normalize(torch.randn(40, 10_000, 6, generator=gen), dim=-1)
    x = F.normalize(d[:, None] + step * direction, dim=-1)
    reachable = (x - d[:, None]).norm(dim=-1) <= gamma
    best_sampled = torch.where(reachable, (x * g[:, None]).sum(-1), -math.inf).max(dim=1).values
    assert ((moved * g).sum(-1) >= best_sampled - 1e-5).all()


@pytest.mark.parametrize("variant", ["m", "n"])
def test_chunks_without_questions_and_gamma_zero_stay_exactly(variant):
    d = F.normalize(torch.randn(4, 5, generator=torch.Generator().manual_seed(3)), dim=-1)
    g = torch.zeros(4, 5)
    g[1] = 1.0
    moved = nudge(d, g, 0.4, variant)
    assert torch.equal(moved[[0, 2, 3]], d[[0, 2, 3]]) and not torch.equal(moved[1], d[1])
    assert torch.equal(nudge(d, g, 0.0, variant), d)


# --- training: gamma on held-out questions -----------------------------------------------------


@pytest.mark.parametrize("variant", ["m", "n"])
def test_nudge_raises_training_mrr_and_picks_a_positive_gamma(variant):
    emb, dataset = crossed_pairs()
    epochs = []
    log = TrainingLog(epoch=lambda e, s, m: epochs.append((e, s, m[HELDOUT_NAME])))
    model = train(emb, dataset, nudge_cfg(variant=variant), log=log)
    train_ids, held_ids = heldout_split(dataset, HOLDOUT, 0, unit="question")
    assert train_ids and held_ids
    tuned = model.encode_corpus(texts(emb, dataset), emb.corpus)
    base_mrr, tuned_mrr = (
        mrr(emb, emb.corpus, dataset, train_ids),
        mrr(emb, tuned, dataset, train_ids),
    )
    assert base_mrr == pytest.approx(0.5) and tuned_mrr > 0.9
    assert model.gamma > 0 and model.variant == variant
    assert [(e, s) for e, s, _ in epochs] == [(i, i) for i in range(len(GRID))]
    assert epochs[0][2] == pytest.approx(mrr(emb, emb.corpus, dataset, held_ids))  # epoch 0: base
    scores = [score for _, _, score in epochs]
    assert model.gamma == GRID[scores.index(max(scores))] and max(scores) > scores[0]


def test_untrained_is_kept_when_moving_hurts_the_heldout_questions():
    """Training questions of chunk c lean towards c + 1, held-out ones towards c - 1: moving
    c - 1 towards its training questions makes it steal c's held-out questions."""
    n = 12
    emb, dataset = split(torch.zeros(2 * n, n), torch.eye(n), {q: [q // 2] for q in range(2 * n)})
    train_ids, held_ids = heldout_split(dataset, HOLDOUT, 0, unit="question")
    eye = torch.eye(n)
    for q in range(2 * n):
        c = q // 2
        lean = 0.9 * eye[(c + 1) % n] if f"q{q}" in train_ids else 0.5 * eye[(c - 1) % n]
        emb.queries[q] = F.normalize(eye[c] + lean, dim=-1)
    epochs, chosen = [], []
    log = TrainingLog(
        epoch=lambda e, s, m: epochs.append(m[HELDOUT_NAME]),
        selected=lambda best, kept, gain: chosen.append((best, kept)),
    )
    model = train(emb, dataset, nudge_cfg(selection_confidence=0.95), log=log)
    assert epochs[0] == 1.0 and min(epochs) < 1.0
    assert model.gamma == 0.0 and model.keys == [] and chosen[0][1] == 0
    assert torch.equal(model.encode_corpus(texts(emb, dataset), emb.corpus), emb.corpus)


def test_only_training_questions_move_chunks():
    emb, dataset = crossed_pairs()
    model = train(emb, dataset, nudge_cfg(gammas=[0.0, 6.4], holdout_fraction=0.0, patience=0))
    assert len(model.keys) == len(emb.corpus_ids)  # nothing held out: every chunk moves
    relevant = dataset["relevant_docs"]
    for seed in range(4):
        train_ids, held_ids = heldout_split(dataset, 0.6, seed, unit="question")
        trained_chunks = {c for q in train_ids for c in relevant[q]}
        assert held_ids and trained_chunks != set(emb.corpus_ids)  # some chunk lost all three
        model = train(emb, dataset, nudge_cfg(gammas=[0.0, 6.4], holdout_fraction=0.6), seed)
        assert model.gamma == 6.4
        tuned = model.encode_corpus(texts(emb, dataset), emb.corpus)
        for row, cid in enumerate(emb.corpus_ids):
            assert torch.equal(tuned[row], emb.corpus[row]) == (cid not in trained_chunks), cid
        assert set(model.keys) == {text_key(dataset["corpus"][c]) for c in trained_chunks}


def test_without_heldout_questions_the_last_gamma_is_used_and_nothing_logged():
    emb, dataset = crossed_pairs()
    epochs = []
    log = TrainingLog(epoch=lambda e, s, m: epochs.append(e))
    assert train(emb, dataset, nudge_cfg(holdout_fraction=0.0), log=log).gamma == GRID[-1]
    assert epochs == []


def test_patience_stops_the_gamma_scan():
    emb, dataset = crossed_pairs()
    epochs = []
    log = TrainingLog(epoch=lambda e, s, m: epochs.append(e))
    train(emb, dataset, nudge_cfg(gammas=[0.0, 1e-6, 2e-6, 3e-6, 6.4], patience=2), log=log)
    assert epochs == [0, 1, 2]  # tiny steps change no rank: two without gain, then stop


def test_no_training_questions_is_an_error():
    emb, dataset = crossed_pairs()
    dataset["relevant_docs"] = {}
    with pytest.raises(EmbedtuneError, match="no labelled training questions"):
        train(emb, dataset, nudge_cfg())


def test_chunks_with_the_same_text_move_as_one():
    emb, dataset = crossed_pairs(n_pairs=2)
    dataset["corpus"]["c1"] = dataset["corpus"]["c0"] + "  "  # same text, whitespace aside
    emb.corpus[1] = emb.corpus[0]
    model = train(emb, dataset, nudge_cfg(holdout_fraction=0.0))
    tuned = model.encode_corpus(texts(emb, dataset), emb.corpus)
    assert len(model.keys) == 3 and torch.equal(tuned[0], tuned[1])


# --- the tuned model: unseen documents, saving, loading ------------------------------------


def test_encode_corpus_changes_only_the_tuned_texts():
    stored = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    model = NudgeModel("n", 0.2, [text_key("A for loop\nrepeats."), text_key("import")], stored)
    base = torch.ones(4, 3)
    query_base = torch.randn(2, 3)
    assert model.encode_queries(["any", "question"], query_base) is query_base
    out = model.encode_corpus(["unseen text", "  A  for loop repeats.\t", "import", "other"], base)
    assert torch.equal(out, torch.stack([base[0], stored[0], stored[1], base[3]]))
    assert torch.equal(base, torch.ones(4, 3))  # the caller's tensor is left alone
    unseen = model.encode_corpus(["Assert checks a condition."], base[:1])
    assert torch.equal(unseen, base[:1])


@pytest.mark.parametrize("gammas", [GRID, [0.0]])
def test_save_and_load_round_trip(tmp_path, gammas):
    emb, dataset = crossed_pairs()
    model = train(emb, dataset, nudge_cfg(gammas=gammas))
    save_tuned(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config == {"method": "nudge", "variant": "n", "gamma": model.gamma}
    raw = (tmp_path / "m" / "model.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])  # no pickle: JSON header
    assert set(header) == {"embeddings", "__metadata__"}
    assert json.loads(header["__metadata__"]["keys"]) == model.keys
    loaded = load_tuned(tmp_path / "m")
    assert isinstance(loaded, NudgeModel) and loaded.method == "nudge"
    assert (loaded.variant, loaded.gamma, loaded.keys) == (model.variant, model.gamma, model.keys)
    assert loaded.embeddings.dtype == torch.float32
    assert torch.equal(loaded.embeddings, model.embeddings)
    assert loaded.embeddings.shape == (len(model.keys), emb.corpus.shape[1]) or not model.keys
    corpus = texts(emb, dataset)
    assert torch.equal(
        loaded.encode_corpus(corpus, emb.corpus), model.encode_corpus(corpus, emb.corpus)
    )


def test_truncated_nudge_weights_are_one_line_naming_them(tmp_path):
    emb, dataset = crossed_pairs()
    save_tuned(train(emb, dataset, nudge_cfg()), tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(EmbedtuneError, match=r"model\.safetensors is damaged \(Error while deser"):
        load_tuned(tmp_path / "m")
    weights.unlink()
    with pytest.raises(
        EmbedtuneError, match=r"model\.safetensors not found: run `dvc repro train`"
    ):
        load_tuned(tmp_path / "m")


# --- config ------------------------------------------------------------------------------------


def test_the_yaml_validates_and_names_the_method():
    train_cfg = cfg("train", "train=nudge")
    assert isinstance(train_cfg, NudgeConfig)
    assert train_cfg.gammas[0] == 0.0 and train_cfg.variant in ("m", "n")
    assert isinstance(get_method(train_cfg.method), NudgeMethod)


@pytest.mark.parametrize(
    ("gammas", "message"),
    [
        ([], "must start with 0.0"),
        ([0.1, 0.2], "must start with 0.0"),
        ([0.0, 0.2, 0.2], "strictly increasing"),
        ([0.0, -0.1], "greater than or equal to 0"),
    ],
)
def test_bad_gammas_are_refused(gammas, message):
    with pytest.raises(ValidationError, match=message):
        cfg("train", "train=nudge", gammas=gammas)
    with pytest.raises(ValidationError, match="variant"):
        cfg("train", "train=nudge", variant="x")
