"""bench/bench_quality.py's method specs and result lines (the pipeline run itself is the
benchmark, not a test)."""

from __future__ import annotations

import importlib.util
import json

import pytest

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
        "mrr@10": {"base": 0.5, "bm25": 0.6, "base+bm25:rrf60": 0.55},
    }
    assert bench_quality.retriever_lines(figures, verdict) == [
        "  held-out pick (52 training questions): best base+bm25:rrf60,"
        " mrr@10 +0.1000 [+0.0500, +0.1500] over base",
        "  bm25: ndcg@10 base 0.4335 tuned 0.4279 diff -0.0056 [-0.0456, +0.0344]",
        "  base+bm25:rrf60: ndcg@10 base 0.4335 tuned 0.4891 diff +0.0556 [+0.0156, +0.0956]",
        "agreement: spearman -0.50 regret 0.0000 shipped base+bm25:rrf60",
        "shipped base+bm25:rrf60: ndcg@10 base 0.4335 tuned 0.4891 diff +0.0556 [+0.0156, +0.0956]",
    ]


def test_agreement_is_the_rank_correlation_and_the_shipped_regret():
    real = {"base": 0.40, "bm25": 0.45, "tuned": 0.42, "base+bm25:rrf60": 0.50}
    figures = {
        "retrievers": {name: {"ndcg@10": value} for name, value in real.items()},
        "shipped": {"retriever": "bm25"},
    }
    same_order = {"mrr@10": {"base": 0.1, "bm25": 0.3, "tuned": 0.2, "base+bm25:rrf60": 0.4}}
    found = bench_quality.agreement(same_order, figures)
    assert found["spearman"] == pytest.approx(1.0)
    assert found["regret"] == pytest.approx(0.05)  # rrf60 was best on the real queries
    reversed_order = {"mrr@10": {n: -v for n, v in same_order["mrr@10"].items()}}
    assert bench_quality.agreement(reversed_order, figures)["spearman"] == pytest.approx(-1.0)
    # tied held-out scores share their average rank
    tied = {"mrr@10": {"base": 0.1, "bm25": 0.3, "tuned": 0.3, "base+bm25:rrf60": 0.4}}
    assert bench_quality.agreement(tied, figures)["spearman"] == pytest.approx(0.9486833)
    none = bench_quality.agreement({}, figures)  # no held-out questions: nothing to compare
    assert none["spearman"] is None
    assert bench_quality.agreement_line(none) == (
        "agreement: spearman n/a regret 0.0500 shipped bm25"
    )


def test_docs_all_writes_every_document(tmp_path):
    collection = tmp_path / "beir"
    collection.mkdir()
    rows = [{"_id": f"d{i}", "title": "", "text": f"text {i}"} for i in range(5)]
    (collection / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench_quality.write_documents(collection, tmp_path / "all", None)
    bench_quality.write_documents(collection, tmp_path / "two", 2)
    assert len(list((tmp_path / "all").iterdir())) == 5
    assert len(list((tmp_path / "two").iterdir())) == 2
