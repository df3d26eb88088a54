"""The adapter methods' training loop on cached embeddings: pairs, batches, the ranking loss,
the optimiser, held-out selection of the epoch and patience.

Hand-made tensors for the helpers, synthetic embeddings (queries are a fixed rotation of their
chunk plus noise, so the base model ranks badly and a linear map ranks well) for training.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

import embedtune.train.methods.adapter_training as adapter_training
from embedtune.errors import EmbedtuneError
from embedtune.retrieval.selection import (
    HELDOUT_NAME,
    heldout_chunks,
    heldout_score,
    heldout_split,
)
from embedtune.train.methods.adapter_training import (
    make_optimizer,
    no_duplicate_batches,
    ranking_loss,
    train_adapter,
    training_pairs,
)
from embedtune.train.methods.base import TrainingLog, get_method
from embedtune.train.methods.linear import LinearAdapter
from embedtune.train.methods.two_layer import TwoLayerAdapter
from tests.helpers import cfg
from tests.helpers.methods import hit_rate_at_1, split, synthetic

# A quarter of the 24 synthetic chunks held out: with fewer, MRR@10 reaches 1.0 within two epochs
# and the first epoch to reach it is kept.
TRAIN = {
    "lr": 0.05,
    "epochs": 8,
    "batch_size": 16,
    "holdout_fraction": 0.25,
    "holdout_min_questions": 0,
    "patience": 0,
}


CORPUS = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
QUERIES = [[1.0, 0.1], [1.0, 0.2], [2.0, 0.0], [0.0, 3.0]]
RELEVANT = {0: [0], 1: [1], 2: [2], 3: [0, 1]}


def test_training_pairs():
    emb, dataset = split(QUERIES, CORPUS, RELEVANT)
    q_rows, d_rows = training_pairs(emb, dataset)
    assert q_rows.tolist() == [0, 1, 2, 3, 3]
    assert d_rows.tolist() == [0, 1, 2, 0, 1]
    q_rows, d_rows = training_pairs(emb, dataset, ["q1", "q3"])
    assert q_rows.tolist() == [1, 3, 3]
    assert d_rows.tolist() == [1, 0, 1]


# --- batches: seeded, shuffled, no chunk twice ---------------------------------------------


@pytest.mark.parametrize(
    ("counts", "batch_size"),
    [([1] * 30, 8), ([2] * 30, 10), ([3] * 22, 16), ([5, 1, 1, 4, 2, 2, 3, 1, 1, 9], 4), ([6], 3)],
)
def test_no_duplicate_batches(counts, batch_size):
    doc_rows = torch.tensor([c for c, n in enumerate(counts) for _ in range(n)])
    doc_rows = doc_rows[torch.randperm(len(doc_rows), generator=torch.Generator().manual_seed(0))]
    batches = no_duplicate_batches(doc_rows, batch_size, torch.Generator().manual_seed(3))
    positions = torch.cat(batches).tolist()
    assert sorted(positions) == list(range(len(doc_rows)))  # every pair once per epoch
    for batch in batches:
        chunks = doc_rows[batch].tolist()
        assert len(chunks) == len(set(chunks)) and len(chunks) <= batch_size
    assert len(batches) == max(math.ceil(len(doc_rows) / batch_size), max(counts))
    sizes = [len(b) for b in batches]
    assert max(sizes) - min(sizes) <= 1


def test_no_duplicate_batches_of_nothing():
    assert no_duplicate_batches(torch.zeros(0, dtype=torch.long), 4, torch.Generator()) == []


def test_no_duplicate_batches_are_seeded_and_reshuffled():
    doc_rows = torch.arange(40).repeat_interleave(2)

    def epochs(seed: int) -> list[list[list[int]]]:
        g = torch.Generator().manual_seed(seed)
        return [[b.tolist() for b in no_duplicate_batches(doc_rows, 10, g)] for _ in range(2)]

    first, second = epochs(5)
    assert epochs(5) == [first, second]
    assert first != second
    assert epochs(6)[0] != first


# --- the ranking loss and the optimiser -----------------------------------------------------


def test_ranking_loss_does_not_use_twin_as_negative():
    corpus = torch.tensor(CORPUS)
    queries = torch.tensor([[1.0, 0.2], [1.0, -0.3], [0.1, 1.0]])  # two for c0, one for c1
    doc_rows = torch.tensor([0, 0, 1])
    loss = ranking_loss(LinearAdapter(2), queries, corpus, doc_rows, scale=5.0)
    # Candidates are the two distinct chunks c0 and c1, not the three rows of the batch.
    scores = 5.0 * F.normalize(queries, dim=-1) @ corpus[[0, 1]].T
    assert loss.item() == pytest.approx(F.cross_entropy(scores, doc_rows).item())
    naive = 5.0 * F.normalize(queries, dim=-1) @ corpus[doc_rows].T
    assert loss.item() < F.cross_entropy(naive, torch.arange(3)).item() - 0.1


def test_ranking_loss_candidate_count(monkeypatch):
    shapes = []
    real_cross_entropy = F.cross_entropy

    def recording_cross_entropy(scores, target):
        shapes.append((tuple(scores.shape), target.tolist()))
        return real_cross_entropy(scores, target)

    monkeypatch.setattr(adapter_training.F, "cross_entropy", recording_cross_entropy)
    queries = torch.eye(3)[[0, 0, 2, 1]]
    ranking_loss(LinearAdapter(3), queries, torch.eye(3), torch.tensor([2, 2, 0, 1]), 1.0)
    assert shapes == [((4, 3), [2, 2, 0, 1])]
    ranking_loss(LinearAdapter(3), queries, torch.eye(3), torch.tensor([2, 2, 2, 0]), 1.0)
    assert shapes[-1] == ((4, 2), [1, 1, 1, 0])


def test_ranking_loss_ranks_against_the_hard_negatives_too():
    corpus = torch.eye(4)
    queries = torch.tensor([[1.0, 0.5, 0.0, 0.2], [0.0, 1.0, 0.3, 0.0]])
    doc_rows = torch.tensor([0, 1])
    negatives = torch.tensor([[3, -1], [3, 2]])  # q0 has one mined negative, q1 two
    loss = ranking_loss(LinearAdapter(4), queries, corpus, doc_rows, 2.0, negatives)
    scores = 2.0 * F.normalize(queries, dim=-1) @ corpus.T  # candidates: c0, c1, c2, c3
    assert loss.item() == pytest.approx(F.cross_entropy(scores, doc_rows).item())
    in_batch = ranking_loss(LinearAdapter(4), queries, corpus, doc_rows, 2.0)
    assert loss.item() > in_batch.item()


def test_identity_weight_pulls_the_adapted_queries_towards_the_base_ones():
    corpus, queries, doc_rows = torch.eye(3), torch.eye(3)[[0, 1]], torch.tensor([0, 1])
    adapter = LinearAdapter(3)
    plain = ranking_loss(adapter, queries, corpus, doc_rows, 1.0)
    assert ranking_loss(adapter, queries, corpus, doc_rows, 1.0, None, 5.0).item() == plain.item()
    with torch.no_grad():
        adapter.linear.bias.fill_(0.1)  # every adapted query moves by 0.1 in each of 3 dims
    moved = ranking_loss(adapter, queries, corpus, doc_rows, 1.0)
    pulled = ranking_loss(adapter, queries, corpus, doc_rows, 1.0, None, 5.0)
    assert pulled.item() == pytest.approx(moved.item() + 5.0 * 0.03, abs=1e-6)


def test_training_with_mined_negatives_uses_them(data, monkeypatch):
    (emb, dataset), _ = data
    seen = []
    real_loss = adapter_training.ranking_loss

    def recording_loss(adapter, queries, corpus, doc_rows, scale, negative_rows, weight):
        seen.append(negative_rows.clone())
        return real_loss(adapter, queries, corpus, doc_rows, scale, negative_rows, weight)

    monkeypatch.setattr(adapter_training, "ranking_loss", recording_loss)
    train_cfg = cfg("train", **{**TRAIN, "epochs": 1, "hard_negatives": 2})
    mined = {q: ["c5", "c6", "c7"] for q in emb.query_ids}
    train_adapter(LinearAdapter(16), emb, dataset, train_cfg, 0, TrainingLog(), None, mined.get)
    assert seen and all(n.shape[1] == 2 and set(n.flatten().tolist()) == {5, 6} for n in seen)


def test_the_selection_is_logged_and_a_clear_gain_keeps_the_trained_weights(data):
    (emb, dataset), _ = data
    chosen = []
    log = TrainingLog(selected=lambda best, kept, gain: chosen.append((best, kept, gain)))
    adapter = train(emb, dataset, cfg("train", **{**TRAIN, "selection_confidence": 0.95}), 7, log)
    ((best, kept, gain),) = chosen
    assert kept == best > 0 and gain["low"] > 0
    assert not torch.allclose(adapter(emb.queries), emb.queries)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)],
)
def test_make_optimizer_skips_frozen_parameters(name, cls):
    adapter = TwoLayerAdapter(4, 8, bias=False, residual=False)  # biases, residual_weight frozen
    optimizer = make_optimizer(adapter.parameters(), name, lr=0.1, weight_decay=0.01)
    assert type(optimizer) is cls
    (group,) = optimizer.param_groups
    assert (group["lr"], group["weight_decay"]) == (0.1, 0.01)
    trained = {id(p) for p in group["params"]}
    assert trained == {id(adapter.linear1.weight), id(adapter.linear2.weight)}


# --- training on synthetic embeddings -------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    return synthetic()


def train(emb, dataset, train_cfg, seed, log=None) -> torch.nn.Module:
    adapter = LinearAdapter(emb.queries.shape[1], bias=train_cfg.bias)
    return train_adapter(adapter, emb, dataset, train_cfg, seed, log or TrainingLog())


@pytest.fixture(scope="module")
def trained(data):
    (emb, dataset), _ = data
    losses: list[float] = []
    epochs: list[tuple[int, int, dict]] = []
    log = TrainingLog(lambda s, loss: losses.append(loss), lambda e, s, m: epochs.append((e, s, m)))
    adapter = train(emb, dataset, cfg("train", **TRAIN), 7, log)
    return adapter, losses, epochs


def steps_per_epoch(dataset: dict, train_cfg, seed: int) -> int:
    train_ids, _ = heldout_split(dataset, train_cfg.holdout_fraction, seed)
    pairs = sum(len(dataset["relevant_docs"][q]) for q in train_ids)
    return math.ceil(pairs / train_cfg.batch_size)


def test_training_lowers_the_loss(trained, data):
    _, losses, _ = trained
    (_, dataset), _ = data
    per_epoch = steps_per_epoch(dataset, cfg("train", **TRAIN), 7)
    assert len(losses) == TRAIN["epochs"] * per_epoch
    first, last = losses[:per_epoch], losses[-per_epoch:]
    assert sum(last) / len(last) < 0.5 * sum(first) / len(first)


def test_training_logs_held_out_mrr_per_epoch(trained, data):
    _, _, epochs = trained
    (emb, dataset), _ = data
    per_epoch = steps_per_epoch(dataset, cfg("train", **TRAIN), 7)
    assert [(e, s) for e, s, _ in epochs] == [
        (e, e * per_epoch) for e in range(TRAIN["epochs"] + 1)
    ]
    assert all(set(m) == {HELDOUT_NAME} for _, _, m in epochs)
    values = [m[HELDOUT_NAME] for _, _, m in epochs]
    assert all(0 <= v <= 1 for v in values)
    assert max(values) > values[0]  # training helped the held-out questions
    # Epoch 0 is the base model, scored by heldout_score (eval's MRR@10) on the held-out rows.
    _, held = heldout_split(dataset, TRAIN["holdout_fraction"], 7)
    rows = [emb.query_ids.index(q) for q in held]
    base = heldout_score(
        emb.queries[rows], emb.corpus, held, emb.corpus_ids, dataset["relevant_docs"]
    )
    assert values[0] == base


def test_the_kept_weights_are_the_best_epochs(trained, data):
    adapter, _, epochs = trained
    (emb, dataset), _ = data
    _, held = heldout_split(dataset, TRAIN["holdout_fraction"], 7)
    rows = [emb.query_ids.index(q) for q in held]
    with torch.no_grad():
        queries = adapter(emb.queries[rows])
    kept = heldout_score(queries, emb.corpus, held, emb.corpus_ids, dataset["relevant_docs"])
    assert kept == max(m[HELDOUT_NAME] for _, _, m in epochs)
    assert not adapter.training


def test_training_improves_unseen_hit_rate(trained, data):
    adapter, _, _ = trained
    _, (emb, dataset) = data
    assert hit_rate_at_1(LinearAdapter(16), emb, dataset) < 0.3
    assert hit_rate_at_1(adapter, emb, dataset) > 0.8


def test_same_seed_same_weights(trained, data):
    adapter, _, _ = trained
    (emb, dataset), _ = data
    again = train(emb, dataset, cfg("train", **TRAIN), 7)
    other = train(emb, dataset, cfg("train", **TRAIN), 8)
    for name, value in adapter.state_dict().items():
        assert torch.equal(again.state_dict()[name], value)
    assert not torch.equal(other.linear.weight, adapter.linear.weight)


def test_batches_in_training_have_distinct_chunks_and_no_held_out_question(data, monkeypatch):
    (emb, dataset), _ = data
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_loss = adapter_training.ranking_loss

    def recording_loss(adapter, queries, corpus, doc_rows, *args):
        seen.append((queries.detach().clone(), doc_rows.clone()))
        return real_loss(adapter, queries, corpus, doc_rows, *args)

    monkeypatch.setattr(adapter_training, "ranking_loss", recording_loss)
    train_cfg = cfg("train", **{**TRAIN, "lr": 0.01, "epochs": 2})
    train(emb, dataset, train_cfg, 3)
    train_ids, held_ids = heldout_split(dataset, 0.25, 3)
    assert len(held_ids) == 3 * 6  # a quarter of the 24 chunks, three questions each
    row = {q: i for i, q in enumerate(emb.query_ids)}
    held_rows = emb.queries[[row[q] for q in held_ids]]
    for queries, doc_rows in seen:
        assert len(set(doc_rows.tolist())) == len(doc_rows)
        assert not (torch.cdist(queries, held_rows) < 1e-6).any()
    assert sum(len(d) for _, d in seen) == 2 * len(train_ids)


def adversarial(seed: int = 0, n_chunks: int = 24, dim: int = 16):
    """Training questions need a rotation, held-out ones are their chunk: training only hurts."""
    g = torch.Generator().manual_seed(seed)
    corpus = F.normalize(torch.randn(n_chunks, dim, generator=g), dim=-1)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    cids = [f"c{i}" for i in range(n_chunks)]
    held = heldout_chunks(cids, 0.25, seed)
    rows = torch.arange(n_chunks).repeat_interleave(2)
    queries = torch.stack([corpus[r] if cids[r] in held else corpus[r] @ rotation.T for r in rows])
    return split(queries, corpus, {i: [r] for i, r in enumerate(rows.tolist())})


@pytest.mark.parametrize(
    ("overrides", "extra", "build"),
    [
        ((), {}, lambda dim: LinearAdapter(dim)),
        (("train=adapter_2layer",), {"hidden_size": 32}, lambda dim: TwoLayerAdapter(dim, 32)),
    ],
    ids=["adapter_linear", "adapter_2layer"],
)
def test_best_epoch_is_kept_and_patience_stops(overrides, extra, build):
    emb, dataset = adversarial()
    train_cfg = cfg(
        "train",
        *overrides,
        lr=0.2,
        epochs=10,
        batch_size=8,
        holdout_fraction=0.25,
        holdout_min_questions=0,
        patience=2,
        **extra,
    )
    epochs: list[tuple[int, float]] = []
    steps: list[int] = []
    log = TrainingLog(
        lambda s, _: steps.append(s), lambda e, s, m: epochs.append((e, m[HELDOUT_NAME]))
    )
    torch.manual_seed(0)
    adapter = train_adapter(build(16), emb, dataset, train_cfg, 0, log)
    assert [e for e, _ in epochs] == [0, 1, 2]  # no gain in epochs 1 and 2: stop
    assert epochs[1][1] < epochs[0][1]
    assert len(steps) == 2 * steps_per_epoch(dataset, train_cfg, 0)
    # The untrained adapter (epoch 0) was best: the identity comes back.
    assert torch.allclose(adapter(emb.queries), emb.queries, atol=1e-6)


def test_without_held_out_questions_the_last_epoch_is_kept(data):
    (emb, dataset), _ = data
    train_cfg = cfg("train", lr=0.05, epochs=3, batch_size=16, holdout_fraction=0.0, patience=0)
    epochs: list[int] = []
    steps: list[int] = []
    log = TrainingLog(lambda s, _: steps.append(s), lambda e, s, m: epochs.append(e))
    adapter = train(emb, dataset, train_cfg, 1, log)
    assert epochs == []
    assert len(steps) == 3 * math.ceil(len(emb.query_ids) / 16)
    assert not torch.equal(adapter.linear.weight, torch.eye(16))


def test_a_batch_of_one_chunk_is_skipped():
    # Three questions of one chunk and one of another, batches of 2: the no-duplicates deal puts
    # the lone chunk with one of the three; the two single-chunk batches have no negative.
    emb, dataset = split(
        [[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]], CORPUS, {0: [0], 1: [0], 2: [0], 3: [1]}
    )
    train_cfg = cfg("train", lr=0.01, epochs=1, batch_size=2, holdout_fraction=0.0, patience=0)
    steps: list[int] = []
    train(emb, dataset, train_cfg, 0, TrainingLog(lambda s, _: steps.append(s)))
    assert steps == [1]


def test_too_few_pairs():
    emb, dataset = split([[1.0, 0.0], [0.0, 1.0]], CORPUS, {0: [0]})
    with pytest.raises(EmbedtuneError, match="1 labelled queries, need at least 2"):
        train(emb, dataset, cfg("train", **TRAIN), 0)


# --- divergence: a NaN model ranks every gold chunk first, so no such epoch may be picked ---


@pytest.mark.parametrize("method", ["adapter_linear_cpu", "adapter_2layer"])
def test_a_diverging_loss_stops_training_and_names_train_lr(data, method):
    (emb, dataset), _ = data
    train_cfg = cfg("train", f"train={method}", **{**TRAIN, "lr": 1e30})
    adapter = get_method(train_cfg.method).build(train_cfg, emb.queries.shape[1])
    epochs: list[int] = []
    log = TrainingLog(epoch=lambda epoch, step, metrics: epochs.append(epoch))
    with pytest.raises(EmbedtuneError) as info:
        train_adapter(adapter, emb, dataset, train_cfg, 0, log)
    # The one check of the whole message (`diverged`); the other tests look for its start.
    assert re.fullmatch(
        rf"training diverged at step [2-4] \(loss nan\): train\.lr=1e\+30 is too high for "
        rf"train\.method={train_cfg.method}; lower train\.lr",
        str(info.value),
    )
    assert epochs == [0]  # stopped within the first epoch: no trained epoch was scored


def test_weights_that_overflow_with_finite_losses_stop_training(data):
    # Plain SGD at lr 1e20: every loss of the epoch is finite, the weights it leaves are not.
    (emb, dataset), _ = data
    overrides = {
        "lr": 1e20,
        "optimizer": "sgd",
        "epochs": 1,
        "batch_size": 64,
        "holdout_fraction": 0,
    }
    train_cfg = cfg("train", **{**TRAIN, **overrides})
    adapter = LinearAdapter(emb.queries.shape[1], bias=train_cfg.bias)
    losses: list[float] = []
    log = TrainingLog(lambda step, loss: losses.append(loss))
    with pytest.raises(EmbedtuneError, match=r"^training diverged at step \d+ \(non-finite weig"):
        train_adapter(adapter, emb, dataset, train_cfg, 0, log)
    assert losses and all(math.isfinite(loss) for loss in losses)
