"""The printed summaries: the base vs tuned table (with and without the bootstrap interval),
the training split line, the benchmark lines, and `python -m embedtune.eval.report`."""

from __future__ import annotations

import json

import pytest

from embedtune.eval import report
from embedtune.eval.report import print_benchmarks, print_table, print_train_split
from embedtune.stage import run_stage


def figures(base: float, tuned: float, queries: int = 82) -> dict:
    return {
        model: {
            "hit_rate@1": v,
            "hit_rate@5": v,
            "hit_rate@10": v,
            "mrr@10": v,
            "ndcg@10": v,
            "recall@5": v,
            "queries": queries,
        }
        for model, v in (("base", base), ("tuned", tuned))
    }


def test_report_with_and_without_delta(tmp_path, monkeypatch, capsys):
    (tmp_path / "eval.json").write_text(json.dumps(figures(0.5, 0.625)))
    monkeypatch.setattr("sys.argv", ["report", str(tmp_path / "eval.json")])
    report.main()
    out = capsys.readouterr().out
    assert "82 held-out queries" in out and "+0.1250" in out
    assert "recall@5" not in out  # only the report's columns
    assert all(name in out for name in report.COLUMNS)
    assert "interval" not in out
    delta = {n: {"diff": 0.125, "low": -0.05, "high": 0.3} for n in report.COLUMNS}
    (tmp_path / "eval_delta.json").write_text(json.dumps(delta))
    report.main()
    out = capsys.readouterr().out
    assert "[-0.0500, +0.3000]" in out and "interval: paired bootstrap over the queries" in out


def test_report_reads_metrics_eval_json_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["report"])
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "eval.json").write_text(json.dumps(figures(0.25, 0.5, queries=7)))
    report.main()
    assert "7 held-out queries" in capsys.readouterr().out


def test_report_without_eval_json_fails_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["report"])
    with pytest.raises(SystemExit) as info:
        run_stage("report", report.main)
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "embedtune report: error: metrics/eval.json not found: "
        "run `make demo` or `dvc exp run` first\n"
    )


def test_diff_comes_from_the_delta_when_present(capsys):
    delta = {"hit_rate@1": {"diff": 0.2, "low": None, "high": None}}
    print_table(figures(0.5, 0.6), delta)
    out = capsys.readouterr().out
    assert "+0.2000" in out  # the unrounded per-query mean, not tuned - base of the rounded means
    assert "interval" not in out  # no bounds without resamples


def test_report_reads_an_older_eval_json(capsys):
    print_table({m: {"hit_rate@5": 0.5, "mrr@5": 0.25, "queries": 3} for m in ("base", "tuned")})
    out = capsys.readouterr().out
    assert "hit_rate@5" in out and "+0.0000" in out and "3 held-out queries" in out
    # none of the report's columns: every metric it has is shown
    print_table({m: {"mrr@5": 0.25, "recall@2": 0.5} for m in ("base", "tuned")})
    out = capsys.readouterr().out
    assert "mrr@5" in out and "recall@2" in out and "?" in out  # no query count


def test_report_shows_a_metric_of_a_new_family_after_the_usual_rows(capsys):
    figures_ = {"hit_rate@5": 0.5, "recall@5": 0.4, "precision@5": 0.125, "queries": 3}
    print_table({m: figures_ for m in ("base", "tuned")})
    out = capsys.readouterr().out
    assert "precision@5" in out and "recall@5" not in out
    assert out.index("hit_rate@5") < out.index("precision@5")


def test_train_split_line_uses_the_largest_hit_rate_cut_off(capsys):
    print_train_split(figures(0.5, 0.75, queries=300))
    assert capsys.readouterr().out == (
        "train split (300 queries): hit_rate@10 base 0.5000, tuned 0.7500\n"
    )
    print_train_split({m: {"mrr@10": 0.5, "queries": 3} for m in ("base", "tuned")})
    assert capsys.readouterr().out == ""  # no hit rate, no line


def test_benchmark_lines_use_the_largest_ndcg_cut_off(capsys):
    scifact = {
        "base": {"ndcg@3": 0.9, "ndcg@10": 0.6, "queries": 300},
        "tuned": {"ndcg@3": 0.8, "ndcg@10": 0.65, "queries": 300},
    }
    print_benchmarks({"scifact": scifact, "nohits": {m: {"queries": 1} for m in scifact}})
    assert capsys.readouterr().out == (
        "benchmark scifact (300 queries): ndcg@10 base 0.6000 tuned 0.6500\n"
    )
    delta = {"ndcg@10": {"diff": 0.05, "low": -0.01, "high": 0.12}}
    print_benchmarks({"scifact": {**scifact, "delta": delta}})
    assert capsys.readouterr().out == (
        "benchmark scifact (300 queries): ndcg@10 base 0.6000 tuned 0.6500 "
        "diff +0.0500 [-0.0100, +0.1200]\n"
    )
    print_benchmarks({})
    assert capsys.readouterr().out == ""


def retriever_figures(bm25_low: float) -> dict:
    summary = {"mrr@10": 0.5, "ndcg@10": 0.6, "queries": 93}
    better = {"mrr@10": 0.55, "ndcg@10": 0.66, "queries": 93}

    def delta(low):
        return {
            "mrr@10": {"diff": 0.05, "low": low, "high": 0.1},
            "ndcg@10": {"diff": 0.06, "low": low, "high": 0.1},
        }

    return {
        "retrievers": {"base": summary, "bm25": better, "base+bm25:rrf60": better},
        "delta_retrievers": {"bm25": delta(bm25_low), "base+bm25:rrf60": delta(0.02)},
        "shipped": {"retriever": "base+bm25:rrf60", **better},
        "delta_shipped": delta(0.02),
    }


def test_every_retriever_then_the_shipped_one(capsys):
    report.print_retrievers(retriever_figures(-0.01), "benchmark tiny")
    out = capsys.readouterr().out
    assert "benchmark tiny: every retriever (93 queries)" in out
    lines = [line.strip() for line in out.splitlines()]
    assert any(line.startswith("bm25") and "+0.0600 [-0.0100, +0.1000]" in line for line in lines)
    assert any(line.startswith("shipped: base+bm25:rrf60") and "+0.020" in line for line in lines)
    assert "BM25 alone beats" not in out  # its interval crosses 0
    report.print_retrievers(retriever_figures(0.01), "benchmark tiny")
    out = capsys.readouterr().out
    assert (
        "benchmark tiny: BM25 alone beats the dense base model beyond noise (ndcg@10 +0.0600" in out
    )
    report.print_retrievers({"base": {}, "tuned": {}}, "old eval.json")
    assert capsys.readouterr().out == ""  # nothing to show before retrievers existed
