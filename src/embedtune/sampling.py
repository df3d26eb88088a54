"""Seeded, order-free subsets: the ids whose seeded hash is smallest.

The held-out slices (chunks or questions) and the seen-corpus questions are chosen this way, so
a choice depends on the ids and the seed only, never on file order, and growing the fraction
only adds ids.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence


def by_hash(ids: Iterable[str], seed: int, salt: str = "") -> list[str]:
    """The distinct `ids` ordered by the sha256 of (salt, seed, id)."""
    prefix = f"{salt}\0" if salt else ""

    def key(item: str) -> str:
        return hashlib.sha256(f"{prefix}{seed}\0{item}".encode()).hexdigest()

    return sorted(set(ids), key=key)


def share(count: int, fraction: float) -> int:
    """`fraction` of `count`, rounded half up."""
    return math.floor(fraction * count + 0.5)


def at_most(ids: Sequence[str], count: int | None, seed: int, salt: str = "") -> list[str]:
    """`count` of `ids` chosen by `by_hash` (all of them when `count` is None or not smaller),
    in their given order."""
    if count is None or count >= len(ids):
        return list(ids)
    chosen = set(by_hash(ids, seed, salt)[:count])
    return [i for i in ids if i in chosen]
