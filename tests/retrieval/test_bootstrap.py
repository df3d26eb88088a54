"""The paired bootstrap interval of tuned - base over the same resampled queries."""

from __future__ import annotations

import numpy as np
import pytest

from embedtune.errors import EmbedtuneError
from embedtune.retrieval.bootstrap import paired_bootstrap


def noisy_pair(n: int = 60, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    base = {"hit_rate@5": rng.integers(0, 2, n).astype(float), "mrr@10": rng.random(n)}
    tuned = {name: np.clip(v + rng.normal(0.05, 0.2, n), 0, 1) for name, v in base.items()}
    return base, tuned


def test_bootstrap_is_seeded():
    base, tuned = noisy_pair()
    first = paired_bootstrap(base, tuned, 500, 0.95, seed=1)
    assert paired_bootstrap(base, tuned, 500, 0.95, seed=1) == first
    assert paired_bootstrap(base, tuned, 500, 0.95, seed=2) != first


def test_bootstrap_interval_contains_observed_difference():
    base, tuned = noisy_pair()
    delta = paired_bootstrap(base, tuned, 1000, 0.95, seed=0)
    assert list(delta) == list(base)
    for name in base:
        d = delta[name]
        assert d["diff"] == round(float((tuned[name] - base[name]).mean()), 4)
        assert d["low"] < d["diff"] < d["high"]
    narrow = paired_bootstrap(base, tuned, 1000, 0.5, seed=0)
    for name in base:
        assert delta[name]["low"] <= narrow[name]["low"] <= narrow[name]["high"]
        assert narrow[name]["high"] <= delta[name]["high"]


def test_bootstrap_is_paired():
    # Tuned is base + 0.1 on every query: however the queries are resampled, the difference is
    # 0.1, so a paired interval has zero width (an unpaired one would not).
    base, _ = noisy_pair()
    tuned = {k: v + 0.1 for k, v in base.items()}
    delta = paired_bootstrap(base, tuned, 300, 0.95, seed=0)
    assert delta == {name: {"diff": 0.1, "low": 0.1, "high": 0.1} for name in base}


def test_bootstrap_zero_width_when_tuned_equals_base():
    base, _ = noisy_pair()
    delta = paired_bootstrap(base, {k: v.copy() for k, v in base.items()}, 200, 0.95, seed=0)
    assert delta == {name: {"diff": 0.0, "low": 0.0, "high": 0.0} for name in base}


def test_bootstrap_without_resamples_gives_no_bounds():
    base, tuned = noisy_pair()
    delta = paired_bootstrap(base, tuned, 0, 0.95, seed=0)
    assert all(d["low"] is None and d["high"] is None for d in delta.values())
    assert delta["mrr@10"]["diff"] == round(float((tuned["mrr@10"] - base["mrr@10"]).mean()), 4)


def test_bootstrap_without_queries():
    with pytest.raises(EmbedtuneError, match="no queries"):
        paired_bootstrap({"mrr@10": np.zeros(0)}, {"mrr@10": np.zeros(0)}, 10, 0.95, 0)
    with pytest.raises(EmbedtuneError, match="no queries"):
        paired_bootstrap({}, {}, 10, 0.95, 0)
