"""Retrieval metrics, one module each, registered under the name `eval.metrics` uses.

A metric maps a `Ranked` (where each query's relevant chunks landed) and a cut-off k to one
value per query. To add one: a module here with

    @METRICS.register("precision")
    def precision(ranked: Ranked, k: int) -> np.ndarray: ...

and its cut-offs in `conf/eval/default.yaml` (`metrics: {precision: [5]}`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from embedtune.registry import Registry
from embedtune.retrieval.ranking import Ranked

Metric = Callable[[Ranked, int], np.ndarray]
METRICS: Registry[Metric] = Registry("eval.metrics", __name__)


def query_metrics(ranked: Ranked, spec: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """Every metric of `spec` (name -> cut-offs) per query, keyed `name@k`."""
    return {
        f"{name}@{k}": METRICS.get(name)(ranked, k)
        for name, ks in spec.items()
        for k in sorted(set(ks))
    }


def metric_at(ranked: Ranked, name: str, k: int) -> float:
    """The mean of one metric over the queries (0 without queries)."""
    values = METRICS.get(name)(ranked, k)
    return float(values.mean()) if len(values) else 0.0


def summarize(per_query: dict[str, np.ndarray]) -> dict:
    """Means over queries, rounded to 4 decimals, plus the query count."""
    counts = {len(v) for v in per_query.values()}
    summary: dict = {
        name: round(float(v.mean()), 4) if len(v) else 0.0 for name, v in per_query.items()
    }
    summary["queries"] = counts.pop() if counts else 0
    return summary
