"""The candidate retrievers `retrieve` lists, and how each scores a block of queries."""

from __future__ import annotations

import pytest
import torch

from embedtune.errors import EmbedtuneError
from embedtune.retrieval import ranking
from embedtune.retrieval.ranking import binary_qrels, rank_scored
from embedtune.retrieval.retrievers import RetrievalInputs, candidates
from tests.helpers import cfg

QUERIES = ["pump XK4821 pressure", "valve seal"]
CORPUS = ["the valve seal leaks", "pump XK4821 pressure rose", "an unrelated note"]


def retrieve(**updates):
    return cfg("retrieve").model_copy(update=updates)


def test_the_default_candidates_in_tie_order():
    names = [c.name for c in candidates(retrieve())]
    fusions = ["rrf60", "convex30", "convex50", "convex70"]
    assert names == [
        "base", "tuned", "bm25",
        *(f"base+bm25:{f}" for f in fusions), *(f"tuned+bm25:{f}" for f in fusions),
    ]  # fmt: skip
    assert [c.name for c in candidates(None)] == ["base", "tuned"]
    shipped = candidates(retrieve())[3].describe()
    assert shipped == {
        "retriever": "base+bm25:rrf60", "dense": "base", "bm25": True,
        "fusion": {"kind": "rrf", "k": 60},
    }  # fmt: skip


def test_duplicate_and_unknown_candidates_are_refused():
    twice = retrieve(fusion={"rrf": [{"k": 60}, {"k": 60}]})
    with pytest.raises(EmbedtuneError, match="lists the candidate 'base\\+bm25:rrf60' twice"):
        candidates(twice)
    with pytest.raises(EmbedtuneError, match="retrieve.ship='bm24' is no candidate"):
        candidates(retrieve(ship="bm24"))
    assert candidates(retrieve(ship="bm25", dense=[], fusion={}))[-1].name == "bm25"


def test_each_candidate_ranks_a_block_at_a_time():
    # base misses both (second, and last of a tie); BM25 finds both
    base = (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0], [1, 0]]))
    inputs = RetrievalInputs.build({"base": base, "tuned": base}, QUERIES, CORPUS, retrieve().bm25)
    qids, cids = ["q0", "q1"], ["c0", "c1", "c2"]
    qrels = binary_qrels(qids, {"q0": ["c1"], "q1": ["c0"]})
    best = {
        c.name: rank_scored(inputs.scorer(c), qids, cids, qrels).best.tolist()
        for c in candidates(retrieve())
    }
    assert best["base"] == [2, 3]  # ties count against the model
    assert best["bm25"] == [1, 1]
    # q1: c0 is BM25's first and dense's second, c2 the reverse: equal fused scores, and the
    # tie counts against the model
    assert best["base+bm25:rrf60"] == [1, 2]
    scores = inputs.scorer(candidates(retrieve())[2])(1, 2)
    assert scores.shape == (1, 3) and scores[0, 0] > 0 and scores[0, 2] == 0
    with pytest.raises(EmbedtuneError, match="bm25 needs BM25"):
        RetrievalInputs({"base": base}).scorer(candidates(retrieve())[2])


def test_candidates_ranked_together_share_a_block_and_equal_each_alone(monkeypatch):
    # every candidate over one block's shared dense and BM25 scores (scaled and ranked once)
    # places every relevant chunk exactly where it places it ranked alone
    g = torch.Generator().manual_seed(0)
    words = ["pump", "valve", "seal", "pressure", "leak", "gauge", "rotor", "shaft"]
    corpus = [" ".join(words[(i * k) % 8] for k in range(1, 5)) for i in range(40)]
    queries = [" ".join(words[(i + k) % 8] for k in range(2)) for i in range(30)]
    dense = {
        m: (torch.randn(30, 6, generator=g).round(), torch.randn(40, 6, generator=g).round())
        for m in ("base", "tuned")
    }
    inputs = RetrievalInputs.build(dense, queries, corpus, retrieve().bm25)
    qids, cids = [f"q{i}" for i in range(30)], [f"c{i}" for i in range(40)]
    qrels = binary_qrels(qids, {q: [cids[i], cids[(3 * i) % 40]] for i, q in enumerate(qids)})
    found = candidates(retrieve())
    monkeypatch.setattr(ranking, "SCORE_BLOCK_BYTES", 8 * 40 * 7)  # blocks of about 7 queries
    monkeypatch.setattr(ranking, "_MIN_QUERIES_PER_BLOCK", 1)
    together = ranking.rank_scored_together(
        [c.name for c in found], inputs.block_scorer(found), qids, cids, qrels
    )
    for c in found:
        alone = rank_scored(inputs.scorer(c), qids, cids, qrels)
        assert [r.tolist() for r in together[c.name].ranks] == [r.tolist() for r in alone.ranks]
    with pytest.raises(EmbedtuneError, match="base\\+bm25:rrf60 needs BM25"):
        RetrievalInputs(dense).block_scorer(found[3:])
