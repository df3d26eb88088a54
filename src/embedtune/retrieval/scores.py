"""Per-query score transforms over the whole corpus, shared by the fusions and the fused teacher
of `fusion_margin_mse` (kept outside `retrieval.fusion`, so a fusion module's edit does not
re-run `train`).

Within `shared_transforms()` a transform of the same tensor is computed once: the fusions of
one block of queries share its dense and BM25 scores, so min-max scaling or ranking BM25 once
serves every fusion setting (same values, computed once).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

# inside `shared_transforms`: (transform, id(scores)) -> (scores, result); the scores are kept
# so that their id is not reused by another tensor while the block lasts
_shared: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] | None = None


@contextmanager
def shared_transforms() -> Iterator[None]:
    """Compute each transform of one tensor once until the block ends (then forget them)."""
    global _shared
    outer, _shared = _shared, {}
    try:
        yield
    finally:
        _shared = outer


def _once_per_tensor(
    transform: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor], torch.Tensor]:
    @functools.wraps(transform)
    def shared(scores: torch.Tensor) -> torch.Tensor:
        if _shared is None:
            return transform(scores)
        key = (transform.__name__, id(scores))
        if key not in _shared:
            _shared[key] = (scores, transform(scores))
        return _shared[key][1]

    return shared


@_once_per_tensor
def competition_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Per row, 1 + the number of chunks scored strictly higher: tied chunks share a rank, so
    no chunk gains from its place in the corpus."""
    descending = scores.sort(dim=1, descending=True).values
    return torch.searchsorted(-descending, -scores.contiguous(), right=False) + 1


@_once_per_tensor
def min_max(scores: torch.Tensor) -> torch.Tensor:
    """Each row scaled to [0, 1] over the corpus (all 0 where a row is constant)."""
    scores = scores.double()
    low = scores.min(dim=1, keepdim=True).values
    span = scores.max(dim=1, keepdim=True).values - low
    return torch.where(span > 0, (scores - low) / span.clamp_min(1e-300), torch.zeros_like(scores))


def convex(dense: torch.Tensor, lexical: torch.Tensor, dense_weight: float) -> torch.Tensor:
    """dense_weight * min-max(dense) + (1 - dense_weight) * min-max(lexical), per row."""
    return dense_weight * min_max(dense) + (1.0 - dense_weight) * min_max(lexical)
