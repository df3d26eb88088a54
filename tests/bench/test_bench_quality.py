"""bench/bench_quality.py's method specs and result lines (the pipeline run itself is the
benchmark, not a test)."""

from __future__ import annotations

import importlib.util

from tests.helpers import ROOT

spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "bench/bench_quality.py")
bench_quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_quality)


def test_a_method_name_is_a_train_option():
    assert bench_quality.method_overrides("full") == ("full", ["-S", "train=full"])


def test_a_variant_carries_its_overrides():
    label, args = bench_quality.method_overrides(
        "full_neg:train=full;train.hard_negatives=4;mine.negative_ranks=[1,30]"
    )
    assert label == "full_neg"
    assert args == [
        *("-S", "train=full"),
        *("-S", "train.hard_negatives=4"),
        *("-S", "mine.negative_ranks=[1,30]"),
    ]


def test_the_figure_line():
    figures = {
        "base": {"ndcg@10": 0.4335},
        "tuned": {"ndcg@10": 0.4449},
        "delta": {"ndcg@10": {"diff": 0.0114, "low": 0.002, "high": 0.022}},
    }
    assert bench_quality.figure(figures) == (
        "ndcg@10 base 0.4335 tuned 0.4449 diff +0.0114 [+0.0020, +0.0220]"
    )
    figures["delta"]["ndcg@10"]["low"] = None
    assert bench_quality.figure(figures).endswith("diff +0.0114")


def test_the_retriever_lines_end_with_the_shipped_one():
    def delta(diff):
        return {"ndcg@10": {"diff": diff, "low": diff - 0.04, "high": diff + 0.04}}

    figures = {
        "base": {"ndcg@10": 0.4335},
        "retrievers": {
            "base": {"ndcg@10": 0.4335},
            "bm25": {"ndcg@10": 0.4279},
            "base+bm25:rrf60": {"ndcg@10": 0.4891},
        },
        "delta_retrievers": {"bm25": delta(-0.0056), "base+bm25:rrf60": delta(0.0556)},
        "shipped": {"retriever": "base+bm25:rrf60", "ndcg@10": 0.4891},
        "delta_shipped": delta(0.0556),
    }
    verdict = {
        "best": "base+bm25:rrf60",
        "heldout_questions": 52,
        "gain_mrr@10": {"diff": 0.1, "low": 0.05, "high": 0.15},
    }
    assert bench_quality.retriever_lines(figures, verdict) == [
        "  held-out pick (52 training questions): best base+bm25:rrf60,"
        " mrr@10 +0.1000 [+0.0500, +0.1500] over base",
        "  bm25: ndcg@10 base 0.4335 tuned 0.4279 diff -0.0056 [-0.0456, +0.0344]",
        "  base+bm25:rrf60: ndcg@10 base 0.4335 tuned 0.4891 diff +0.0556 [+0.0156, +0.0956]",
        "shipped base+bm25:rrf60: ndcg@10 base 0.4335 tuned 0.4891 diff +0.0556 [+0.0156, +0.0956]",
    ]
