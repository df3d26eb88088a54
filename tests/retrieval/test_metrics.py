"""The metrics registry (`eval.metrics`): each metric on hand-computed cases, `name@k` keys, an
unknown name, and a metric registered from here and used like the built-in ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedtune.errors import EmbedtuneError
from embedtune.retrieval.metrics import METRICS, metric_at, query_metrics, summarize
from embedtune.retrieval.ranking import Ranked
from tests.helpers import cfg
from tests.helpers.retrieval import hand_made_ranked, ranked_from


def ranked_at(*ranks: list[int]) -> Ranked:
    """Binary relevance with the relevant chunks of each query at the given ranks."""
    return Ranked([np.array(r, dtype=np.int64) for r in ranks], [np.ones(len(r)) for r in ranks])


@pytest.fixture
def hand_made() -> Ranked:
    return hand_made_ranked()  # best ranks [1, 2, 3, 1]; the last query has gold at ranks 3, 1


def metric(name: str):
    return METRICS.get(name)


def test_registry_finds_every_metric_module():
    assert METRICS.key == "eval.metrics"
    assert METRICS.names() == ["hit_rate", "mrr", "ndcg", "recall"]


@pytest.mark.parametrize(
    ("k", "hits", "recalls"),
    [
        (1, [1, 0, 0, 1], [1, 0, 0, 0.5]),
        (2, [1, 1, 0, 1], [1, 1, 0, 0.5]),
        (3, [1, 1, 1, 1], [1, 1, 1, 1]),
    ],
)
def test_hit_rate_and_recall(hand_made, k, hits, recalls):
    assert metric("hit_rate")(hand_made, k).tolist() == hits
    assert metric("recall")(hand_made, k).tolist() == recalls


def test_mrr_and_ndcg_hand_computed(hand_made):
    assert metric("mrr")(hand_made, 10).tolist() == pytest.approx([1, 1 / 2, 1 / 3, 1])
    # q3: relevant at ranks 1 and 3 out of an ideal 1 and 2.
    q3 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    expected = [1, 1 / math.log2(3), 1 / math.log2(4), q3]
    assert metric("ndcg")(hand_made, 10).tolist() == pytest.approx(expected)


def test_mrr_cuts_off_beyond_k():
    ranked = ranked_at([10], [11], [1, 12])
    assert metric("mrr")(ranked, 10).tolist() == pytest.approx([0.1, 0.0, 1.0])
    assert metric("mrr")(ranked, 11).tolist() == pytest.approx([0.1, 1 / 11, 1.0])


def test_ndcg_graded_relevance():
    # Grades 3 and 1 at ranks 1 and 3: DCG = 3 + 1/log2(4); ideal = 3 + 1/log2(3).
    ranked = Ranked([np.array([1, 3])], [np.array([3.0, 1.0])])
    expected = (3 + 1 / math.log2(4)) / (3 + 1 / math.log2(3))
    assert metric("ndcg")(ranked, 10).tolist() == pytest.approx([expected])
    # The less relevant chunk scored higher: DCG = 1 + 2/log2(3), ideal = 2 + 1/log2(3).
    ranked = ranked_from([[0.9, 0.5, 0.1]], {0: {0: 1.0, 1: 2.0}})
    assert ranked.ranks[0].tolist() == [1, 2]
    expected = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert metric("ndcg")(ranked, 10).tolist() == pytest.approx([expected])


def test_ndcg_counts_only_the_top_k():
    ranked = Ranked([np.array([11]), np.array([10])], [np.ones(1), np.ones(1)])
    assert metric("ndcg")(ranked, 10).tolist() == pytest.approx([0.0, 1 / math.log2(11)])
    # The ideal list is cut at k too: two relevant chunks, k = 1, the best one at rank 1.
    ranked = Ranked([np.array([1, 5])], [np.ones(2)])
    assert metric("ndcg")(ranked, 1).tolist() == pytest.approx([1.0])


def test_query_without_relevant_chunk_scores_zero():
    ranked = ranked_from([[0.9, 0.1]], {})
    assert ranked.best.tolist() == [0]
    values = query_metrics(ranked, {name: [1, 5] for name in METRICS.names()})
    assert len(values) == 8
    assert all(v.tolist() == [0.0] for v in values.values())


def test_query_metrics_keys_are_name_at_k_in_spec_order(hand_made):
    values = query_metrics(hand_made, {"ndcg": [10, 2], "hit_rate": [3, 1, 3], "mrr": [10]})
    assert list(values) == ["ndcg@2", "ndcg@10", "hit_rate@1", "hit_rate@3", "mrr@10"]
    assert values["hit_rate@1"].tolist() == metric("hit_rate")(hand_made, 1).tolist()
    assert values["ndcg@2"].tolist() == metric("ndcg")(hand_made, 2).tolist()


def test_query_metrics_with_the_configured_spec(hand_made):
    # conf/eval/default.yaml: the keys that metrics/eval.json and the report show.
    values = query_metrics(hand_made, cfg("eval").metrics)
    assert list(values) == [
        *(f"hit_rate@{k}" for k in (1, 3, 5, 10)),
        *(f"recall@{k}" for k in (1, 3, 5, 10)),
        "mrr@10",
        "ndcg@10",
    ]


def test_unknown_metric_names_eval_metrics_and_the_choices(hand_made):
    message = r"eval\.metrics='precision' is not known \(known: hit_rate, mrr, ndcg, recall\)"
    with pytest.raises(EmbedtuneError, match=message):
        query_metrics(hand_made, {"hit_rate": [1], "precision": [5]})
    with pytest.raises(EmbedtuneError, match=message):
        metric_at(hand_made, "precision", 5)


def test_metric_at_is_the_mean(hand_made):
    assert metric_at(hand_made, "hit_rate", 2) == pytest.approx(0.75)
    assert metric_at(hand_made, "mrr", 10) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1) / 4)
    assert metric_at(Ranked([], []), "hit_rate", 1) == 0.0


def test_summarize_keys_and_rounding(hand_made):
    summary = summarize(query_metrics(hand_made, {"hit_rate": [3, 1], "mrr": [10]}))
    assert list(summary) == ["hit_rate@1", "hit_rate@3", "mrr@10", "queries"]
    assert summary["queries"] == 4
    assert summary["hit_rate@1"] == 0.5
    assert summary["mrr@10"] == round((1 + 1 / 2 + 1 / 3 + 1) / 4, 4)
    assert summarize({"mrr@10": np.zeros(0)}) == {"mrr@10": 0.0, "queries": 0}


# --- a metric registered from a test ------------------------------------------------------------


def precision(ranked: Ranked, k: int) -> np.ndarray:
    """precision@k: relevant chunks in the top k, over k."""
    return np.array([(r <= k).sum() / k for r in ranked.ranks], dtype=np.float64)


@pytest.fixture
def with_precision():
    METRICS.register("precision")(precision)
    try:
        yield
    finally:
        METRICS.unregister("precision")


def test_registered_metric_is_used_like_the_built_in_ones(hand_made, with_precision):
    assert "precision" in METRICS.names()
    values = query_metrics(hand_made, {"precision": [2, 1], "hit_rate": [1]})
    assert list(values) == ["precision@1", "precision@2", "hit_rate@1"]
    assert values["precision@2"].tolist() == [0.5, 0.5, 0.0, 0.5]
    assert values["precision@1"].tolist() == values["hit_rate@1"].tolist()
    assert summarize(values)["precision@2"] == 0.375
    assert metric_at(hand_made, "precision", 3) == pytest.approx((1 + 1 + 1 + 2) / 3 / 4)
    # The eval section accepts it like any other metric name.
    assert cfg("eval", metrics={"precision": [2]}).metrics == {"precision": [2]}


def test_unregistered_metric_is_gone(hand_made, with_precision):
    METRICS.unregister("precision")
    assert METRICS.names() == ["hit_rate", "mrr", "ndcg", "recall"]
    with pytest.raises(EmbedtuneError, match=r"eval\.metrics='precision' is not known"):
        query_metrics(hand_made, {"precision": [1]})


def test_a_name_registers_only_one_metric(with_precision):
    METRICS.names()  # every metric module imported, hit_rate registered
    METRICS.register("precision")(precision)  # the same function again: accepted
    with pytest.raises(ValueError, match=r"eval\.metrics='hit_rate' is registered twice"):
        METRICS.register("hit_rate")(precision)
    assert METRICS.get("hit_rate") is not precision
