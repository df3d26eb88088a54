"""mrr@k: 1 / rank of the best-ranked relevant chunk, 0 beyond rank k."""

import numpy as np

from embedtune.retrieval.metrics import METRICS
from embedtune.retrieval.ranking import Ranked


@METRICS.register("mrr")
def mrr(ranked: Ranked, k: int) -> np.ndarray:
    best = ranked.best
    hits = (best >= 1) & (best <= k)
    return np.where(hits, 1.0 / np.maximum(best, 1), 0.0)
