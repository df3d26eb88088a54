"""The held-out slice that picks the epoch, and its score: the same ranking, tie rule and MRR@10
as `eval` (retrieval.ranking.rank_relevant and the registered `mrr` metric)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedtune.embeddings import SplitEmbeddings
from embedtune.retrieval.evaluation import evaluate
from embedtune.retrieval.metrics import METRICS, metric_at
from embedtune.retrieval.ranking import (
    binary_qrels,
    cosine_scores,
    rank,
    rank_relevant,
    relevance_matrix,
)
from embedtune.retrieval.selection import (
    HELDOUT_NAME,
    beats_base,
    gain_over_base,
    heldout_chunks,
    heldout_score,
    heldout_split,
    select_retriever,
    split_queries,
)
from embedtune.train.methods.adapters import AdapterModel
from embedtune.train.methods.linear import LinearAdapter

IDS = [f"chunk-{i:03d}" for i in range(200)]


def test_the_heldout_metric_is_evals_mrr_at_10():
    assert HELDOUT_NAME == "mrr@10"


# --- which questions are held out -----------------------------------------------------------


@pytest.mark.parametrize(("fraction", "count"), [(0.0, 0), (0.1, 20), (0.25, 50), (0.999, 200)])
def test_heldout_chunks_takes_the_fraction(fraction, count):
    assert len(heldout_chunks(IDS, fraction, seed=1)) == count


def test_heldout_chunks_is_seeded_and_order_free():
    chosen = heldout_chunks(IDS, 0.1, seed=1)
    assert chosen <= set(IDS)
    assert heldout_chunks(reversed(IDS), 0.1, seed=1) == chosen
    assert heldout_chunks(IDS + IDS[:5], 0.1, seed=1) == chosen  # duplicates count once
    assert heldout_chunks(IDS, 0.1, seed=2) != chosen
    # More held out is a superset: the order of the chunks is the seeded hash, not the fraction.
    assert heldout_chunks(IDS, 0.2, seed=1) > chosen


def test_split_queries_holds_out_every_question_of_a_held_out_chunk():
    relevant = {"q0": ["a"], "q1": ["b"], "q2": ["a", "c"], "q3": [], "q4": ["c"]}
    train, held = split_queries(["q0", "q1", "q2", "q3", "q4", "q5"], relevant, {"a"})
    assert train == ["q1", "q4"]
    assert held == ["q0", "q2"]  # q3 has no chunk, q5 no entry: neither


def test_heldout_split_holds_out_chunks_with_questions_in_query_order():
    dataset = {
        "queries": {f"q{i}": f"question {i}" for i in (5, 3, 1, 0, 2, 4, 6, 7)},
        "corpus": {f"c{i}": f"chunk {i}" for i in range(12)},  # c4..c11 have no question
        "relevant_docs": {f"q{i}": [f"c{i // 2}"] for i in range(8)},
    }
    train, held = heldout_split(dataset, 0.5, seed=0)
    held_chunks = heldout_chunks([f"c{i}" for i in range(4)], 0.5, seed=0)
    assert len(held_chunks) == 2  # half the 4 chunks with questions, not half of the 12
    assert held == [q for q in dataset["queries"] if dataset["relevant_docs"][q][0] in held_chunks]
    assert train == [q for q in dataset["queries"] if q not in held]
    assert heldout_split(dataset, 0.0, seed=0) == (list(dataset["queries"]), [])


# --- the held-out score ---------------------------------------------------------------------

# Hand-made: three chunks on the unit circle, four queries with known gold ranks 1, 2, 3, 1.
CORPUS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
QUERIES = torch.tensor(
    [
        [1.0, 0.1],  # gold c0, the closest chunk: rank 1
        [1.0, 0.2],  # gold c1, second closest after c0: rank 2
        [2.0, 0.0],  # gold c2, the farthest (and not unit length): rank 3
        [0.0, 3.0],  # gold c0 and c1: the better one, c1, ranks first
    ]
)
QIDS, CIDS = ["q0", "q1", "q2", "q3"], ["c0", "c1", "c2"]
RELEVANT = {"q0": ["c0"], "q1": ["c1"], "q2": ["c2"], "q3": ["c0", "c1"]}


def test_gold_mask_of_the_hand_made_split():
    # (was train.gold_mask: now retrieval.ranking.relevance_matrix, which heldout_score uses)
    relevance = relevance_matrix(QIDS, CIDS, binary_qrels(QIDS, RELEVANT))
    assert (relevance > 0).tolist() == [
        [True, False, False],
        [False, True, False],
        [False, False, True],
        [True, True, False],
    ]


@pytest.mark.parametrize(
    ("k", "mrr"),
    [(1, (1 + 0 + 0 + 1) / 4), (2, (1 + 1 / 2 + 0 + 1) / 4), (3, (1 + 1 / 2 + 1 / 3 + 1) / 4)],
)
def test_mrr_at_k_of_the_hand_made_split(k, mrr):
    # (was train.mrr_at_k: now the `mrr` metric that eval and heldout_score share)
    ranked = rank(QUERIES, CORPUS, QIDS, CIDS, binary_qrels(QIDS, RELEVANT))
    assert ranked.best.tolist() == [1, 2, 3, 1]
    assert metric_at(ranked, "mrr", k) == pytest.approx(mrr)


def test_heldout_score_is_mrr_at_10():
    assert heldout_score(QUERIES, CORPUS, QIDS, CIDS, RELEVANT) == pytest.approx(
        (1 + 1 / 2 + 1 / 3 + 1) / 4
    )


def test_a_query_without_relevant_chunk_is_a_miss():
    assert heldout_score(QUERIES, CORPUS, QIDS, CIDS, {"q0": ["c0"]}) == pytest.approx(1 / 4)


def test_no_held_out_query_scores_zero():
    assert heldout_score(QUERIES[:0], CORPUS, [], CIDS, RELEVANT) == 0.0


def test_heldout_score_stops_at_rank_10():
    corpus = torch.eye(12)
    query = torch.linspace(1.0, 0.1, 12)[None]  # chunk i ranks i + 1
    cids = [f"c{i}" for i in range(12)]
    assert heldout_score(query, corpus, ["q"], cids, {"q": ["c9"]}) == pytest.approx(1 / 10)
    assert heldout_score(query, corpus, ["q"], cids, {"q": ["c10"]}) == 0.0


@pytest.mark.parametrize("gold", ["c0", "c1"])
def test_an_exact_tie_counts_against_the_model(gold):
    # c0 and c1 are the same vector: the query cannot tell its chunk from the other one.
    corpus = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    query = torch.tensor([[1.0, 0.3]])
    score = heldout_score(query, corpus, ["q"], CIDS, {"q": [gold]})
    assert score == 0.5  # rank 2, whichever of the twins is the gold one
    # Both twins relevant: the query's best relevant chunk is first.
    assert heldout_score(query, corpus, ["q"], CIDS, {"q": ["c0", "c1"]}) == 1.0


def test_a_collapsed_model_scores_zero_not_one():
    corpus = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
    queries = torch.zeros(3, 4)  # every chunk scores the same
    cids = [f"c{i}" for i in range(12)]
    relevant = {"q0": ["c0"], "q1": ["c5"], "q2": ["c11"]}
    assert heldout_score(queries, corpus, ["q0", "q1", "q2"], cids, relevant) == 0.0


def tied_split(seed: int = 0) -> tuple[SplitEmbeddings, dict]:
    """Coarse embeddings (entries -1, 0, 1 in 3 dimensions): many exact ties, some gold chunks
    beyond rank 10, and some queries with two relevant chunks."""
    g = torch.Generator().manual_seed(seed)
    corpus = torch.randint(-1, 2, (40, 3), generator=g).float()
    corpus[corpus.abs().sum(dim=1) == 0] = 1.0  # no zero vector
    queries = torch.randint(-1, 2, (30, 3), generator=g).float()
    queries[queries.abs().sum(dim=1) == 0] = -1.0
    qids, cids = [f"q{i}" for i in range(30)], [f"c{i}" for i in range(40)]
    gold = torch.randint(0, 40, (30, 2), generator=g).tolist()
    relevant = {
        q: sorted({cids[a], cids[b]} if i % 3 == 0 else {cids[a]})
        for i, (q, (a, b)) in enumerate(zip(qids, gold, strict=True))
    }
    dataset = {
        "queries": {q: f"question {q}" for q in qids},
        "corpus": {c: f"chunk {c}" for c in cids},
        "relevant_docs": relevant,
    }
    return SplitEmbeddings(qids, queries, cids, corpus), dataset


def test_heldout_score_is_rank_relevant_and_the_mrr_metric():
    emb, dataset = tied_split()
    scores = cosine_scores(emb.queries, emb.corpus)
    relevance = relevance_matrix(
        emb.query_ids, emb.corpus_ids, binary_qrels(emb.query_ids, dataset["relevant_docs"])
    )
    ranked = rank_relevant(scores, relevance)
    best = ranked.best
    assert (best == 1).any() and (best > 10).any()  # hits, misses
    # A gold chunk ties exactly with a chunk that is not relevant: the tie costs it a rank.
    gold, other = relevance[:, :, None] > 0, relevance[:, None, :] == 0
    assert ((scores[:, :, None] == scores[:, None, :]) & gold & other).any()
    expected = float(METRICS.get("mrr")(ranked, 10).mean())
    got = heldout_score(
        emb.queries, emb.corpus, emb.query_ids, emb.corpus_ids, dataset["relevant_docs"]
    )
    assert got == expected


def test_heldout_score_equals_evals_mrr_at_10_on_the_same_inputs():
    emb, dataset = tied_split(seed=3)
    torch.manual_seed(0)
    adapter = LinearAdapter(3)
    with torch.no_grad():
        adapter.linear.weight.add_(torch.randn(3, 3))
    result = evaluate(emb, dataset, AdapterModel("adapter_linear", adapter), {"mrr": [10]})
    relevant = dataset["relevant_docs"]
    with torch.no_grad():
        tuned_queries = adapter(emb.queries)
    for model, queries in (("base", emb.queries), ("tuned", tuned_queries)):
        eval_mrr = float(result.per_query[model]["mrr@10"].mean())
        score = heldout_score(queries, emb.corpus, emb.query_ids, emb.corpus_ids, relevant)
        assert score == pytest.approx(eval_mrr, abs=1e-12)
        assert result.metrics[model]["mrr@10"] == round(score, 4)
    assert result.metrics["base"]["mrr@10"] != result.metrics["tuned"]["mrr@10"]


def test_eval_also_counts_the_tie_against_the_model():
    corpus = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    twins = SplitEmbeddings(["q"], torch.tensor([[1.0, 0.3]]), CIDS, corpus)
    data = {"queries": {"q": "q"}, "corpus": {c: c for c in CIDS}, "relevant_docs": {"q": ["c1"]}}
    identity = AdapterModel("adapter_linear", LinearAdapter(2))
    result = evaluate(twins, data, identity, {"mrr": [10]})
    assert result.metrics["base"]["mrr@10"] == 0.5
    assert result.best["base"].tolist() == [2]


# --- the slice's size and the selection rule ---------------------------------------------------


def test_the_slice_grows_to_min_questions_but_leaves_half_for_training():
    ids = [f"c{i}" for i in range(20)]
    questions = dict.fromkeys(ids, 2)  # 40 questions
    by_fraction = heldout_chunks(ids, 0.1, seed=1, questions=questions, min_questions=0)
    assert len(by_fraction) == 2
    grown = heldout_chunks(ids, 0.1, seed=1, questions=questions, min_questions=10)
    assert len(grown) == 5 and grown > by_fraction  # same hash order, more of it
    capped = heldout_chunks(ids, 0.1, seed=1, questions=questions, min_questions=50)
    assert len(capped) == 10  # 20 of 40 questions: half stay for training
    assert heldout_chunks(ids, 0.0, seed=1, questions=questions, min_questions=10) == set()


def test_heldout_split_of_some_queries_with_min_questions():
    dataset = {
        "queries": {f"q{i}": "?" for i in range(12)},
        "relevant_docs": {f"q{i}": [f"c{i // 2}"] for i in range(12)},
    }
    train, held = heldout_split(dataset, 0.1, 0, min_questions=4)
    assert len(held) == 4 and len(train) == 8 and not set(train) & set(held)
    some = [f"q{i}" for i in range(6)]
    train, held = heldout_split(dataset, 0.1, 0, min_questions=2, query_ids=some)
    assert set(train) | set(held) == set(some) and len(held) == 2


def test_the_selection_rule():
    untrained = np.array([0.5, 0.2, 1.0, 0.0] * 10)
    clear = gain_over_base(untrained, untrained + 0.1, 0.95, seed=0)
    assert clear["diff"] == pytest.approx(0.1) and clear["low"] > 0
    assert beats_base(clear, 0.95)
    noisy = untrained.copy()
    noisy[:2] += [0.5, -0.3]  # a mean gain of 0.005, from two questions only
    gain = gain_over_base(untrained, noisy, 0.95, seed=0)
    assert gain["diff"] > 0 and gain["low"] < 0 < gain["high"]
    assert not beats_base(gain, 0.95)
    mean_only = gain_over_base(untrained, noisy, 0.0, seed=0)
    assert mean_only["low"] is None and beats_base(mean_only, 0.0)
    worse = gain_over_base(untrained, untrained - 0.1, None, seed=0)
    assert beats_base(worse, None) and not beats_base(worse, 0.0)


# --- choosing the retriever to ship ---------------------------------------------------------


def test_select_retriever_ships_a_clear_winner():
    base = np.array([0.0, 0.5, 1.0, 0.0] * 10)
    values = {"base": base, "tuned": base, "bm25": np.ones(40), "base+bm25:rrf60": np.ones(40)}
    verdict = select_retriever(values, 0.9, seed=0)
    assert verdict["best"] == "bm25"  # equal to the fusion's mean: the first listed wins the tie
    assert verdict["shipped"] == "bm25"
    gain = verdict["gain_mrr@10"]
    assert gain["diff"] == 0.625 and gain["low"] > 0
    assert verdict["mrr@10"] == {"base": 0.375, "tuned": 0.375, "bm25": 1.0, "base+bm25:rrf60": 1.0}


def test_select_retriever_keeps_the_dense_base_within_noise():
    base = np.array([0.0, 1.0] * 10)
    better = base.copy()
    better[0] = 1.0  # one question of twenty gains
    verdict = select_retriever({"base": base, "tuned": base, "bm25": better}, 0.9, seed=0)
    assert verdict["best"] == "bm25" and verdict["shipped"] == "base"
    assert verdict["gain_mrr@10"]["low"] <= 0
    # selection_confidence None: the best is shipped whatever its interval (as train keeps it)
    assert select_retriever({"base": base, "bm25": better}, None, 0)["shipped"] == "bm25"
    # a tie with the base goes to the base
    assert select_retriever({"base": base, "tuned": base}, 0.0, 0)["shipped"] == "base"
