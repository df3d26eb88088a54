"""Base vs tuned on one split or benchmark, with the real offline model (all-MiniLM-L6-v2) and
tuned models from `embedtune.train.methods` (an identity adapter: tuned == base exactly)."""

from __future__ import annotations

import csv

import pytest
import torch

from embedtune import io
from embedtune.embeddings import BlockStore, SplitEmbeddings, embed_dataset, embed_texts
from embedtune.errors import EmbedtuneError
from embedtune.eval.__main__ import evaluate_benchmark
from embedtune.eval.tables import QUERY_COLUMNS, hit_rate_curve, query_rows
from embedtune.retrieval.beir import Benchmark, load_benchmark
from embedtune.retrieval.bootstrap import paired_bootstrap
from embedtune.retrieval.evaluation import MODELS, SplitResult, compare, evaluate
from embedtune.retrieval.metrics import METRICS
from embedtune.retrieval.retrievers import RetrievalInputs
from embedtune.train.methods.adapters import AdapterModel
from embedtune.train.methods.linear import LinearAdapter
from embedtune.train.methods.two_layer import TwoLayerAdapter
from tests.helpers import cfg
from tests.helpers.eval import DATASET, SPEC, identity
from tests.helpers.retrieval import write_beir


def collapsed() -> AdapterModel:
    """A linear adapter with zero weights: every query becomes the zero vector."""
    adapter = LinearAdapter(384)
    with torch.no_grad():
        adapter.linear.weight.zero_()
    return AdapterModel("adapter_linear", adapter)


class Shuffled:
    """A 'tuned' model that gives each query the embedding of another: it ranks worse."""

    method = "shuffled"

    def encode_queries(self, texts, base):
        return base.roll(1, dims=0)

    def encode_corpus(self, texts, base):
        return base


@pytest.fixture(scope="module")
def embedded(minilm) -> SplitEmbeddings:
    return embed_dataset(minilm, DATASET, cfg("embed", batch_size=8))


def test_identity_adapter_equals_base(embedded):
    result = evaluate(embedded, DATASET, identity(), SPEC)
    assert isinstance(result, SplitResult)
    assert result.query_ids == list(DATASET["queries"])
    metrics = result.metrics
    assert list(metrics) == list(MODELS)
    assert metrics["tuned"] == metrics["base"]
    assert metrics["base"]["queries"] == 4
    assert metrics["base"]["hit_rate@10"] == 0.75  # q-none has no gold chunk
    assert metrics["base"]["recall@3"] <= metrics["base"]["hit_rate@3"]
    assert 0 < metrics["base"]["mrr@10"] <= metrics["base"]["hit_rate@10"]
    assert result.best["base"].tolist()[3] == 0
    assert result.best["base"].tolist()[:3] == [1, 1, 1]  # the model gets these right
    assert result.ranked["base"].ranks[2].tolist() == result.ranked["tuned"].ranks[2].tolist()
    delta = paired_bootstrap(result.per_query["base"], result.per_query["tuned"], 100, 0.9, 3)
    assert all(d == {"diff": 0.0, "low": 0.0, "high": 0.0} for d in delta.values())


def test_metric_keys_follow_the_spec(embedded):
    result = evaluate(embedded, DATASET, identity(), {"mrr": [3], "hit_rate": [2, 1]})
    assert list(result.metrics["base"]) == ["mrr@3", "hit_rate@1", "hit_rate@2", "queries"]
    with pytest.raises(EmbedtuneError, match=r"eval\.metrics='map' is not known"):
        evaluate(embedded, DATASET, identity(), {"map": [10]})


def test_two_layer_adapter_at_its_start_equals_base(embedded):
    # The residual weight starts at 0: the untrained two-layer adapter is the base model too.
    tuned = AdapterModel("adapter_2layer", TwoLayerAdapter(384, 16))
    result = evaluate(embedded, DATASET, tuned, SPEC)
    assert result.metrics["tuned"] == result.metrics["base"]


def test_collapsed_model_scores_zero_not_perfect(embedded):
    result = evaluate(embedded, DATASET, collapsed(), SPEC)
    tuned = result.metrics["tuned"]
    assert tuned["hit_rate@1"] == 0.0
    assert tuned["hit_rate@3"] == 0.25  # q-import: 2 gold of 4, the first at rank 3
    assert result.best["tuned"].tolist() == [4, 4, 3, 0]  # last among 4 equal scores
    assert result.metrics["base"]["hit_rate@1"] == 0.75


def test_worse_tuned_model(embedded):
    result = evaluate(embedded, DATASET, Shuffled(), {"hit_rate": [1]})
    assert result.metrics["tuned"]["hit_rate@1"] < result.metrics["base"]["hit_rate@1"]


def test_without_queries():
    emb = SplitEmbeddings([], torch.zeros(0, 2), ["c0"], torch.ones(1, 2))
    dataset = {"queries": {}, "corpus": {"c0": "x"}, "relevant_docs": {}}
    with pytest.raises(EmbedtuneError, match="split has no queries"):
        evaluate(emb, dataset, identity(), SPEC)


def test_non_finite_embeddings_are_an_error(embedded):
    class Broken(Shuffled):
        def encode_queries(self, texts, base):
            return torch.full_like(base, float("nan"))

    with pytest.raises(EmbedtuneError, match="tuned model gave non-finite query embeddings"):
        evaluate(embedded, DATASET, Broken(), SPEC)

    class BrokenCorpus(Shuffled):
        def encode_corpus(self, texts, base):
            return torch.full_like(base, float("inf"))

    with pytest.raises(EmbedtuneError, match="tuned model gave non-finite chunk embeddings"):
        evaluate(embedded, DATASET, BrokenCorpus(), SPEC)


def test_tuned_model_gets_texts_and_base_embeddings(embedded):
    seen = {}

    class Recording(Shuffled):
        def encode_queries(self, texts, base):
            seen["queries"] = (texts, base)
            return base.numpy()  # anything torch.as_tensor takes

        def encode_corpus(self, texts, base):
            seen["corpus"] = (texts, base)
            return base

    result = evaluate(embedded, DATASET, Recording(), SPEC)
    assert seen["queries"][0] == list(DATASET["queries"].values())
    assert torch.equal(seen["queries"][1], embedded.queries)
    assert seen["corpus"][0] == list(DATASET["corpus"].values())
    assert torch.equal(seen["corpus"][1], embedded.corpus)
    assert result.metrics["tuned"] == result.metrics["base"]


def test_compare_graded_qrels():
    # Two chunks; q0's more relevant chunk ranks second for "base" and first for "tuned".
    base = (torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    tuned = (torch.tensor([[0.0, 1.0]]), base[1])
    qrels = {"q0": {"c0": 1.0, "c1": 3.0}}
    result = compare(
        ["q0"], ["c0", "c1"], qrels, RetrievalInputs({"base": base, "tuned": tuned}), {"ndcg": [10]}
    )
    assert result.ranked["base"].ranks[0].tolist() == [1, 2]
    assert result.ranked["tuned"].ranks[0].tolist() == [2, 1]
    assert result.metrics["tuned"]["ndcg@10"] == 1.0
    assert result.metrics["base"]["ndcg@10"] < 1.0


def test_a_registered_metric_reaches_the_results(embedded):
    @METRICS.register("first_rank")
    def first_rank(ranked, k):
        return ranked.best.astype(float)

    try:
        result = evaluate(embedded, DATASET, Shuffled(), {"first_rank": [1]})
    finally:
        METRICS.unregister("first_rank")
    assert result.per_query["base"]["first_rank@1"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert result.metrics["base"]["first_rank@1"] == 0.75


def test_hit_rate_curve(embedded):
    result = evaluate(embedded, DATASET, Shuffled(), {"hit_rate": [1, 3]})
    curve = hit_rate_curve(result, 4)
    assert [row["k"] for row in curve] == [1, 2, 3, 4]
    assert all(list(row) == ["k", *MODELS] for row in curve)
    for model in MODELS:
        values = [row[model] for row in curve]
        assert values == sorted(values)
        assert values[0] == result.metrics[model]["hit_rate@1"]
        assert values[2] == result.metrics[model]["hit_rate@3"]
    assert curve[-1]["base"] == 0.75


def test_query_csv(embedded, tmp_path):
    result = evaluate(embedded, DATASET, Shuffled(), {"hit_rate": [1]})
    path = tmp_path / "queries.csv"
    io.write_csv(path, query_rows("validation", result, DATASET), QUERY_COLUMNS)
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(QUERY_COLUMNS)
    assert [r["query_id"] for r in rows] == list(DATASET["queries"])
    first = rows[0]
    assert first["split"] == "validation"
    assert first["query"] == DATASET["queries"]["q-for"]
    assert first["gold_ids"] == "c-for"
    assert first["base_rank"] == "1"
    assert int(first["tuned_rank"]) == result.best["tuned"][0]
    assert rows[2]["gold_ids"] == "c-import c-pass"
    assert rows[3]["gold_ids"] == "" and rows[3]["base_rank"] == "" and rows[3]["tuned_rank"] == ""


def test_evaluate_benchmark_identity(minilm, tmp_path):
    bench = load_benchmark(write_beir(tmp_path / "tiny"))
    result = evaluate_benchmark(bench, BlockStore(minilm, 8), identity(), cfg("embed"), SPEC)
    metrics = result.metrics
    assert metrics["tuned"] == metrics["base"]
    assert metrics["base"]["queries"] == 2
    assert result.query_ids == ["q1", "q2"]
    assert metrics["base"]["hit_rate@1"] == 1.0
    assert 0 < metrics["base"]["ndcg@10"] <= 1.0


def test_evaluate_benchmark_uses_prefixes(minilm):
    bench = Benchmark({"d": "some text"}, {"q": "some text"}, {"q": {"d": 1.0}})
    seen = []

    class Recording(Shuffled):
        def encode_queries(self, texts, base):
            seen.append(("q", texts, base))
            return base

        def encode_corpus(self, texts, base):
            seen.append(("c", texts, base))
            return base

    embed = cfg("embed", query_prefix="query: ", document_prefix="passage: ")
    evaluate_benchmark(bench, BlockStore(minilm, 8), Recording(), embed, {"hit_rate": [1]})
    # texts reach the tuned model unprefixed; the base embeddings were made with the prefixes
    assert [(side, texts) for side, texts, _ in seen] == [
        ("q", ["some text"]),
        ("c", ["some text"]),
    ]
    prefixed = embed_texts(minilm, ["query: some text", "passage: some text"], "", 8)
    assert torch.allclose(seen[0][2], prefixed[:1], atol=1e-5)
    assert torch.allclose(seen[1][2], prefixed[1:], atol=1e-5)
    plain = embed_texts(minilm, ["some text"], "", 8)
    assert not torch.allclose(seen[0][2], plain, atol=1e-3)
