"""The paired bootstrap interval of tuned - base, per metric, over the same resampled queries,
and the one way it is written out."""

from __future__ import annotations

import numpy as np

from embedtune.errors import EmbedtuneError


def paired_bootstrap(
    base: dict[str, np.ndarray],
    tuned: dict[str, np.ndarray],
    resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, dict]:
    """Tuned - base for each metric with a percentile interval from a paired bootstrap.

    The same resampled query sets serve every metric and both models, so the interval is that of
    the difference on the same questions. With `resamples` 0 the bounds are None.
    """
    names = list(base)
    n = len(next(iter(base.values()))) if names else 0
    if n == 0:
        raise EmbedtuneError("no queries to compare: check metrics/synth.json")
    rows = None
    if resamples > 0:
        rows = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    tail = (1.0 - confidence) / 2.0
    delta = {}
    for name in names:
        diff = tuned[name] - base[name]
        low = high = None
        if rows is not None:
            means = diff[rows].mean(axis=1)
            low, high = (round(float(x), 4) for x in np.quantile(means, [tail, 1.0 - tail]))
        delta[name] = {"diff": round(float(diff.mean()), 4), "low": low, "high": high}
    return delta


def format_bounds(delta: dict) -> str | None:
    """The interval of a difference, "[+0.0062, +0.0663]"; None without bounds (no resamples)."""
    if delta.get("low") is None or delta.get("high") is None:
        return None
    return f"[{delta['low']:+.4f}, {delta['high']:+.4f}]"


def format_interval(delta: dict) -> str:
    """A difference with its interval, "+0.0355 [+0.0062, +0.0663]", or the difference alone
    when the interval has no bounds."""
    bounds = format_bounds(delta)
    return f"{delta['diff']:+.4f}" + (f" {bounds}" if bounds else "")
