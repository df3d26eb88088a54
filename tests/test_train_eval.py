"""Ranking metrics on hand-made tensors, and the linear adapter on synthetic embeddings."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from embedtune.config import TrainConfig
from embedtune.embed import SplitEmbeddings
from embedtune.errors import EmbedtuneError
from embedtune.eval import evaluate, gold_ranks, retrieval_metrics
from embedtune.train import (
    LinearAdapter,
    load_adapter,
    ranking_loss,
    save_adapter,
    train_adapter,
    training_pairs,
)

CFG = TrainConfig(lr=0.05, epochs=8, batch_size=16)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The matrices here are tiny: with several intra-op threads, start-up costs dominate.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def split(queries, corpus, relevant: dict[int, list[int]]) -> tuple[SplitEmbeddings, dict]:
    """A split whose query i is relevant to the chunks `relevant[i]` (row numbers)."""
    qids = [f"q{i}" for i in range(len(queries))]
    cids = [f"c{i}" for i in range(len(corpus))]
    emb = SplitEmbeddings(qids, torch.as_tensor(queries), cids, torch.as_tensor(corpus))
    docs = {qids[q]: [cids[c] for c in cs] for q, cs in relevant.items()}
    return emb, {"relevant_docs": docs}


# Hand-made: three chunks on the unit circle, four queries with known gold ranks.
CORPUS = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
QUERIES = [
    [1.0, 0.1],  # gold c0, the closest chunk: rank 1
    [1.0, 0.2],  # gold c1, second closest after c0: rank 2
    [2.0, 0.0],  # gold c2, the farthest (and not unit length): rank 3
    [0.0, 3.0],  # gold c0 and c1: the better one, c1, ranks first
]
RELEVANT = {0: [0], 1: [1], 2: [2], 3: [0, 1]}


@pytest.fixture
def hand_made() -> tuple[SplitEmbeddings, dict]:
    return split(QUERIES, CORPUS, RELEVANT)


def test_gold_ranks(hand_made):
    emb, dataset = hand_made
    ranks = gold_ranks(emb.queries, emb, dataset["relevant_docs"])
    assert ranks.tolist() == [1, 2, 3, 1]


def test_gold_ranks_without_relevant_chunk_is_a_miss(hand_made):
    emb, _ = hand_made
    ranks = gold_ranks(emb.queries, emb, {"q0": ["c0"]})
    assert ranks.tolist() == [1, 4, 4, 4]


@pytest.mark.parametrize(
    ("k", "hit_rate", "mrr"),
    [
        (1, 2 / 4, (1 + 0 + 0 + 1) / 4),
        (2, 3 / 4, (1 + 1 / 2 + 0 + 1) / 4),
        (3, 4 / 4, (1 + 1 / 2 + 1 / 3 + 1) / 4),
    ],
)
def test_retrieval_metrics(k, hit_rate, mrr):
    metrics = retrieval_metrics(torch.tensor([1, 2, 3, 1]), k)
    assert metrics == {
        f"hit_rate@{k}": round(hit_rate, 4),
        f"mrr@{k}": round(mrr, 4),
        "queries": 4,
    }


def test_retrieval_metrics_all_misses():
    metrics = retrieval_metrics(torch.tensor([6, 9]), 5)
    assert metrics == {"hit_rate@5": 0.0, "mrr@5": 0.0, "queries": 2}


def test_identity_adapter_changes_nothing(hand_made):
    emb, dataset = hand_made
    metrics = evaluate(emb, dataset["relevant_docs"], LinearAdapter(2), k=2)
    assert metrics["tuned"] == metrics["base"]
    assert metrics["base"] == {"hit_rate@2": 0.75, "mrr@2": 0.625, "queries": 4}


def test_evaluate_without_queries():
    emb = SplitEmbeddings([], torch.zeros(0, 2), ["c0"], torch.ones(1, 2))
    with pytest.raises(EmbedtuneError, match="no queries"):
        evaluate(emb, {}, LinearAdapter(2), k=1)


def test_training_pairs(hand_made):
    emb, dataset = hand_made
    q_rows, d_rows = training_pairs(emb, dataset)
    assert q_rows.tolist() == [0, 1, 2, 3, 3]
    assert d_rows.tolist() == [0, 1, 2, 0, 1]


# Synthetic: queries are a fixed rotation of their chunk plus noise, so the base model ranks
# badly and a linear map (the inverse rotation) ranks well.


def synthetic(seed: int = 0, n_chunks: int = 24, dim: int = 16, noise: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    corpus = F.normalize(torch.randn(n_chunks, dim, generator=g), dim=-1)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))

    def queries(per_chunk: int) -> tuple[SplitEmbeddings, dict]:
        rows = torch.arange(n_chunks).repeat_interleave(per_chunk)
        jitter = noise * torch.randn(len(rows), dim, generator=g) / dim**0.5
        q = F.normalize(corpus[rows] @ rotation.T + jitter, dim=-1)
        return split(q, corpus, {i: [r] for i, r in enumerate(rows.tolist())})

    return queries(3), queries(2)  # train, held out


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.fixture(scope="module")
def trained(data):
    (emb, dataset), _ = data
    losses: list[float] = []
    adapter = train_adapter(emb, dataset, CFG, seed=7, log_step=lambda s, loss: losses.append(loss))
    return adapter, losses


def test_training_lowers_the_loss(trained, data):
    adapter, losses = trained
    steps_per_epoch = -(-72 // CFG.batch_size)
    assert len(losses) == CFG.epochs * steps_per_epoch
    first, last = losses[:steps_per_epoch], losses[-steps_per_epoch:]
    assert sum(last) / len(last) < 0.5 * sum(first) / len(first)


def test_training_improves_held_out_hit_rate(trained, data):
    adapter, _ = trained
    _, (emb, dataset) = data
    metrics = evaluate(emb, dataset["relevant_docs"], adapter, k=1)
    assert metrics["base"]["hit_rate@1"] < 0.3
    assert metrics["tuned"]["hit_rate@1"] > 0.8
    assert metrics["tuned"]["mrr@1"] > metrics["base"]["mrr@1"]


def test_same_seed_same_weights(trained, data):
    adapter, _ = trained
    (emb, dataset), _ = data
    again = train_adapter(emb, dataset, CFG, seed=7)
    other = train_adapter(emb, dataset, CFG, seed=8)
    for name, value in adapter.state_dict().items():
        assert torch.equal(again.state_dict()[name], value)
    assert not torch.equal(other.linear.weight, adapter.linear.weight)


def test_too_few_pairs():
    emb, dataset = split([[1.0, 0.0], [0.0, 1.0]], CORPUS, {0: [0]})
    with pytest.raises(EmbedtuneError, match="1 labelled queries, need at least 2"):
        train_adapter(emb, dataset, CFG, seed=0)


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
    import embedtune.train as train_module

    shapes = []
    real_cross_entropy = F.cross_entropy

    def recording_cross_entropy(scores, target):
        shapes.append((tuple(scores.shape), target.tolist()))
        return real_cross_entropy(scores, target)

    monkeypatch.setattr(train_module.F, "cross_entropy", recording_cross_entropy)
    queries = torch.eye(3)[[0, 0, 2, 1]]
    ranking_loss(LinearAdapter(3), queries, torch.eye(3), torch.tensor([2, 2, 0, 1]), 1.0)
    assert shapes == [((4, 3), [2, 2, 0, 1])]
    ranking_loss(LinearAdapter(3), queries, torch.eye(3), torch.tensor([2, 2, 2, 0]), 1.0)
    assert shapes[-1] == ((4, 2), [1, 1, 1, 0])


def test_save_and_load_adapter(trained, tmp_path):
    adapter, _ = trained
    folder = tmp_path / "adapter"
    save_adapter(adapter, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((folder / "config.json").read_text()) == {
        "method": "adapter_linear",
        "in_features": 16,
        "out_features": 16,
        "bias": True,
    }
    raw = (folder / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])  # safetensors: a JSON header, then raw tensors
    assert set(header) - {"__metadata__"} == {"linear.weight", "linear.bias"}
    assert not raw.startswith((b"PK", b"\x80"))  # neither torch.save's zip nor a pickle
    loaded = load_adapter(folder)
    for name, value in adapter.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    x = torch.randn(3, 16)
    assert torch.equal(loaded(x), adapter(x))


def test_save_and_load_adapter_without_bias(tmp_path):
    adapter = LinearAdapter(4, bias=False)
    with torch.no_grad():
        adapter.linear.weight.mul_(2.0)
    save_adapter(adapter, tmp_path)
    loaded = load_adapter(tmp_path)
    assert loaded.linear.bias is None
    assert torch.equal(loaded.linear.weight, 2.0 * torch.eye(4))


def test_load_adapter_missing(tmp_path):
    with pytest.raises(EmbedtuneError, match=r"config\.json not found.*dvc repro train"):
        load_adapter(tmp_path / "nothing")
