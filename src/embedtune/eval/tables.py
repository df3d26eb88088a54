"""The per-query and per-cut-off tables `eval` writes: metrics/eval_queries.csv and
metrics/plots/hit_rate_vs_k.csv."""

from __future__ import annotations

from embedtune.retrieval.evaluation import MODELS, SplitResult
from embedtune.retrieval.metrics import metric_at

QUERY_COLUMNS = ["split", "query_id", "query", "gold_ids", "base_rank", "tuned_rank"]


def query_rows(split: str, result: SplitResult, dataset: dict) -> list[dict]:
    """Rows of metrics/eval_queries.csv for one split (rank '' when a query has no gold chunk)."""
    best = result.best
    return [
        {
            "split": split,
            "query_id": qid,
            "query": dataset["queries"][qid],
            "gold_ids": " ".join(dataset["relevant_docs"].get(qid, [])),
            **{f"{model}_rank": int(best[model][i]) or "" for model in MODELS},
        }
        for i, qid in enumerate(result.query_ids)
    ]


def hit_rate_curve(result: SplitResult, max_k: int) -> list[dict]:
    """Rows {k, base, tuned}: hit rate at every k from 1 to `max_k`."""
    return [
        {"k": k, **{m: round(metric_at(result.ranked[m], "hit_rate", k), 4) for m in MODELS}}
        for k in range(1, max_k + 1)
    ]
