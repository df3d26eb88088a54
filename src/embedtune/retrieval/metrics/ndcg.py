"""ndcg@k with linear gains (the relevance grades) and log2(rank + 1) discounts, as BEIR's
pytrec_eval computes it."""

import numpy as np

from embedtune.retrieval.metrics import METRICS
from embedtune.retrieval.ranking import Ranked


@METRICS.register("ndcg")
def ndcg(ranked: Ranked, k: int) -> np.ndarray:
    values = []
    for ranks, grades in zip(ranked.ranks, ranked.grades, strict=True):
        top = ranks <= k
        dcg = float((grades[top] / np.log2(ranks[top] + 1.0)).sum())
        ideal = np.sort(grades)[::-1][:k]
        idcg = float((ideal / np.log2(np.arange(2, len(ideal) + 2))).sum())
        values.append(dcg / idcg if idcg > 0 else 0.0)
    return np.array(values, dtype=np.float64)
