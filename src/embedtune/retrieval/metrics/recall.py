"""recall@k: the share of a query's relevant chunks in the top k (0 without relevant chunks)."""

import numpy as np

from embedtune.retrieval.metrics import METRICS
from embedtune.retrieval.ranking import Ranked


@METRICS.register("recall")
def recall(ranked: Ranked, k: int) -> np.ndarray:
    return np.array([(r <= k).mean() if len(r) else 0.0 for r in ranked.ranks], dtype=np.float64)
