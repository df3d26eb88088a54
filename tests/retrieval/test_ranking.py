"""Where relevant chunks land: cosine scores, relevance grades, and THE tie rule (ties count
against the model), checked on hand-made vectors and against a plain sort."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedtune.errors import EmbedtuneError
from embedtune.retrieval import ranking
from embedtune.retrieval.metrics import query_metrics, summarize
from embedtune.retrieval.ranking import (
    Ranked,
    binary_qrels,
    cosine_scores,
    query_blocks,
    rank,
    rank_relevant,
    relevance_matrix,
)
from tests.helpers.retrieval import hand_made_ranked, ranked_from


@pytest.fixture
def hand_made() -> Ranked:
    """Three chunks on the unit circle, four queries with known gold ranks (their comments)."""
    return hand_made_ranked()


def test_ranks_of_relevant_chunks(hand_made):
    assert [r.tolist() for r in hand_made.ranks] == [[1], [2], [3], [3, 1]]
    assert [g.tolist() for g in hand_made.grades] == [[1.0], [1.0], [1.0], [1.0, 1.0]]
    assert hand_made.best.tolist() == [1, 2, 3, 1]


def test_cosine_scores_normalise_both_sides():
    scores = cosine_scores(torch.tensor([[3.0, 4.0]]), torch.tensor([[6.0, 8.0], [0.0, -2.0]]))
    assert scores[0].tolist() == pytest.approx([1.0, -0.8])
    half = cosine_scores(torch.tensor([[3.0, 4.0]], dtype=torch.float16), torch.eye(2))
    assert half.dtype == torch.float32


def test_binary_qrels():
    assert binary_qrels(["q0", "q1"], {"q0": ["c0", "c2"], "q9": ["c1"]}) == {
        "q0": {"c0": 1.0, "c2": 1.0},
        "q1": {},
    }


def test_relevance_matrix():
    relevance = relevance_matrix(
        ["q0", "q1", "q2"], ["c0", "c1"], {"q0": {"c1": 2.0}, "q1": {"c0": 1.0, "c1": 0.0}}
    )
    assert relevance.tolist() == [[0.0, 2.0], [1.0, 0.0], [0.0, 0.0]]


def test_relevance_matrix_unknown_chunk():
    with pytest.raises(
        EmbedtuneError, match="query 'q0': relevant chunk 'c9' is not in the corpus"
    ):
        relevance_matrix(["q0"], ["c0"], {"q0": {"c9": 1.0}})


# --- the tie rule (pinned) ---------------------------------------------------------------------


@pytest.mark.parametrize("gold", [0, 1, 2])
def test_gold_tied_with_non_gold_ranks_after_it(gold):
    # Three chunks tie, wherever the gold one sits in the corpus it ranks after the other two.
    ranked = ranked_from([[0.5, 0.5, 0.5, 0.1]], {0: {gold: 1.0}})
    assert ranked.best.tolist() == [3]
    # A chunk scored strictly lower never counts; one scored higher always does.
    ranked = ranked_from([[0.9, 0.5, 0.5, 0.1]], {0: {1: 1.0}})
    assert ranked.best.tolist() == [3]


def test_tie_between_relevant_chunks_of_different_grades():
    # The less relevant chunk ranks first: the tie costs the model NDCG as well.
    ranked = ranked_from([[0.5, 0.5, 0.9]], {0: {0: 2.0, 1: 1.0}})
    assert ranked.ranks[0].tolist() == [3, 2]
    ranked = ranked_from([[0.5, 0.5, 0.9]], {0: {0: 1.0, 1: 2.0}})
    assert ranked.ranks[0].tolist() == [2, 3]


def test_equal_grades_tie_break_by_corpus_position():
    # Both relevant, same grade, same score as a non-relevant chunk: the non-relevant one first,
    # then the earlier of the two in the corpus.
    ranked = ranked_from([[0.5, 0.5, 0.5]], {0: {0: 1.0, 1: 1.0}})
    assert ranked.ranks[0].tolist() == [2, 3]
    ranked = ranked_from([[0.5, 0.5, 0.5]], {0: {1: 1.0, 2: 1.0}})
    assert ranked.ranks[0].tolist() == [2, 3]


def test_collapsed_model_scores_zero_not_perfect():
    # A model that maps every query to the zero vector scores every chunk equally (0).
    ranked = rank(
        torch.zeros(3, 4),
        torch.eye(4),
        ["q0", "q1", "q2"],
        ["c0", "c1", "c2", "c3"],
        {f"q{i}": {f"c{i}": 1.0} for i in range(3)},
    )
    assert ranked.best.tolist() == [4, 4, 4]  # every gold chunk last of 4
    metrics = summarize(query_metrics(ranked, {"hit_rate": [1, 3], "mrr": [10]}))
    assert metrics["hit_rate@1"] == 0.0
    assert metrics["hit_rate@3"] == 0.0
    assert metrics["mrr@10"] == pytest.approx(0.25)


def test_query_without_relevant_chunk():
    ranked = ranked_from([[0.9, 0.1], [0.2, 0.3]], {1: {0: 1.0}})
    assert ranked.best.tolist() == [0, 2]
    assert ranked.ranks[0].tolist() == [] and ranked.grades[0].tolist() == []


def test_no_queries():
    ranked = rank_relevant(torch.zeros(0, 3), torch.zeros(0, 3))
    assert ranked.ranks == [] and ranked.best.tolist() == []


def sorted_ranks(scores: np.ndarray, relevance: np.ndarray) -> list[list[int]]:
    """The tie rule written as a plain sort: by score descending, then grade ascending, then
    corpus position; a relevant chunk's rank is its place in that order."""
    out = []
    for row, grades in zip(scores, relevance, strict=True):
        order = sorted(range(len(row)), key=lambda c: (-row[c], grades[c], c))
        place = {c: i + 1 for i, c in enumerate(order)}
        out.append([place[c] for c in np.flatnonzero(grades > 0)])
    return out


@pytest.mark.parametrize("block", [1, 3, 256])
def test_ranks_match_a_plain_sort_in_any_block_size(monkeypatch, block):
    rng = np.random.default_rng(block)
    scores = rng.integers(0, 4, size=(30, 25)).astype(np.float32)  # many ties
    relevance = rng.choice([0.0, 0.0, 0.0, 1.0, 2.0], size=(30, 25)).astype(np.float32)
    monkeypatch.setattr(ranking, "_PAIRS_PER_BLOCK", block)
    ranked = rank_relevant(torch.from_numpy(scores), torch.from_numpy(relevance))
    assert [r.tolist() for r in ranked.ranks] == sorted_ranks(scores, relevance)
    grades = [row[row > 0].tolist() for row in relevance]
    assert [g.tolist() for g in ranked.grades] == grades


def test_hand_made_in_blocks_of_two(monkeypatch, hand_made):
    monkeypatch.setattr(ranking, "_PAIRS_PER_BLOCK", 2)
    again = hand_made_ranked()
    assert [r.tolist() for r in again.ranks] == [r.tolist() for r in hand_made.ranks]


def test_blocks_cover_every_query_without_a_tiny_remainder():
    assert query_blocks(0) == []
    assert query_blocks(5, size=10) == [(0, 5)]
    blocks = query_blocks(2049, size=1024)
    assert blocks == [(0, 683), (683, 1366), (1366, 2049)]  # never 1024, 1024 and 1
    assert all(hi - lo <= 1024 for lo, hi in query_blocks(10_000))


def test_ranking_in_blocks_is_ranking_at_once(monkeypatch):
    g = torch.Generator().manual_seed(0)
    queries, corpus = torch.randn(300, 16, generator=g), torch.randn(120, 16, generator=g)
    qids, cids = [f"q{i}" for i in range(300)], [f"c{i}" for i in range(120)]
    qrels = {q: {cids[i % 120]: 1.0, cids[(7 * i) % 120]: 2.0} for i, q in enumerate(qids)}
    whole = rank(queries, corpus, qids, cids, qrels)
    monkeypatch.setattr("embedtune.retrieval.ranking.QUERIES_PER_BLOCK", 64)
    blocked = rank(queries, corpus, qids, cids, qrels)
    assert all(np.array_equal(a, b) for a, b in zip(whole.ranks, blocked.ranks, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(whole.grades, blocked.grades, strict=True))


def test_non_finite_scores_stop_ranking():
    with pytest.raises(EmbedtuneError, match="non-finite similarity scores"):
        rank(torch.tensor([[float("nan"), 1.0]]), torch.eye(2), ["q"], ["a", "b"], {"q": {"a": 1}})


# --- linear memory: sparse relevance, blocks bounded by the corpus size ------------------------


def test_relevant_columns_are_sparse_and_in_corpus_order():
    relevant = ranking.relevant_columns(
        ["q0", "q1", "q2"],
        ["c0", "c1", "c2"],
        {"q0": {"c2": 2.0, "c0": 1.0}, "q1": {"c1": 0.0}, "q2": {"c1": 0.5}},
    )
    assert relevant.bounds.tolist() == [0, 2, 2, 3]
    assert relevant.columns.tolist() == [0, 2, 1]
    assert relevant.grades.tolist() == [1.0, 2.0, 0.5]
    rows, columns, grades = relevant.rows(1, 3)
    assert rows.tolist() == [1] and columns.tolist() == [1] and grades.tolist() == [0.5]


def test_relevant_columns_unknown_chunk_stops_before_scoring():
    asked = []

    def scorer(lo, hi):
        asked.append((lo, hi))
        return torch.zeros(hi - lo, 1)

    with pytest.raises(EmbedtuneError, match="query 'q1': relevant chunk 'c9' is not in"):
        ranking.rank_scored(scorer, ["q0", "q1"], ["c0"], {"q0": {"c0": 1}, "q1": {"c9": 1}})
    assert asked == []


def test_block_rows_bound_the_scores_by_the_corpus_size(monkeypatch):
    assert ranking.queries_per_block(100) == ranking.QUERIES_PER_BLOCK  # small corpora: as before
    rows = ranking.queries_per_block(100_000)
    assert rows * 100_000 * 8 <= ranking.SCORE_BLOCK_BYTES
    assert rows >= ranking._MIN_QUERIES_PER_BLOCK
    assert ranking.queries_per_block(10**9) == ranking._MIN_QUERIES_PER_BLOCK
    monkeypatch.setattr(ranking, "SCORE_BLOCK_BYTES", 8 * 40 * 50)
    assert ranking.queries_per_block(40) == 50


def test_ranking_asks_the_scorer_for_bounded_blocks_only(monkeypatch):
    g = torch.Generator().manual_seed(1)
    queries, corpus = torch.randn(500, 8, generator=g), torch.randn(90, 8, generator=g)
    qids, cids = [f"q{i}" for i in range(500)], [f"c{i}" for i in range(90)]
    qrels = {q: {cids[i % 90]: 1.0, cids[(5 * i) % 90]: 3.0} for i, q in enumerate(qids)}
    whole = rank(queries, corpus, qids, cids, qrels)
    monkeypatch.setattr(ranking, "SCORE_BLOCK_BYTES", 8 * 90 * 40)  # 40 queries a block
    monkeypatch.setattr(ranking, "_MIN_QUERIES_PER_BLOCK", 1)
    monkeypatch.setattr(ranking, "_COMPARED_PER_BLOCK", 7 * 90)  # 7 pairs compared at a time
    scorer, asked = ranking.cosine_scorer(queries, corpus), []

    def counted(lo, hi):
        asked.append(hi - lo)
        return scorer(lo, hi)

    blocked = ranking.rank_scored(counted, qids, cids, qrels)
    assert max(asked) <= 40 and sum(asked) == 500
    assert all(np.array_equal(a, b) for a, b in zip(whole.ranks, blocked.ranks, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(whole.grades, blocked.grades, strict=True))
    assert blocked.ranks[0].dtype == np.int64 and blocked.grades[0].dtype == np.float64


@pytest.mark.parametrize("compared", [1, 25, 10_000])
def test_sparse_ranks_match_a_plain_sort_with_ties_and_grades(monkeypatch, compared):
    # Many ties, several relevant chunks per query of mixed grades, some queries with none;
    # pairs compared one, one row's worth, or all at once.
    rng = np.random.default_rng(compared)
    scores = rng.integers(0, 3, size=(40, 25)).astype(np.float64)
    relevance = rng.choice([0.0, 0.0, 0.0, 1.0, 2.0, 0.5], size=(40, 25)).astype(np.float32)
    relevance[::7] = 0
    monkeypatch.setattr(ranking, "_COMPARED_PER_BLOCK", compared)
    qids, cids = [f"q{i}" for i in range(40)], [f"c{i}" for i in range(25)]
    qrels = {
        q: {cids[c]: float(g) for c, g in enumerate(row) if g}
        for q, row in zip(qids, relevance, strict=True)
    }
    ranked = ranking.rank_scored(lambda lo, hi: torch.from_numpy(scores[lo:hi]), qids, cids, qrels)
    assert [r.tolist() for r in ranked.ranks] == sorted_ranks(scores, relevance)
    assert [g.tolist() for g in ranked.grades] == [row[row > 0].tolist() for row in relevance]


def test_finite_without_a_mask():
    assert ranking.finite(torch.tensor([[1.0, 2.0]]))
    assert ranking.finite(torch.zeros(2, 0))
    for bad in (float("nan"), float("inf"), -float("inf")):
        assert not ranking.finite(torch.tensor([[1.0, bad], [0.0, 0.0]]))
