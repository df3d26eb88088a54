"""hit_rate@k: 1 when a relevant chunk is in the top k, else 0."""

import numpy as np

from embedtune.retrieval.metrics import METRICS
from embedtune.retrieval.ranking import Ranked


@METRICS.register("hit_rate")
def hit_rate(ranked: Ranked, k: int) -> np.ndarray:
    best = ranked.best
    return ((best >= 1) & (best <= k)).astype(np.float64)
