"""Per-query score transforms over the whole corpus, shared by the fusions and the fused teacher
of `fusion_margin_mse` (kept outside `retrieval.fusion`, so a fusion module's edit does not
re-run `train`)."""

from __future__ import annotations

import torch


def competition_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Per row, 1 + the number of chunks scored strictly higher: tied chunks share a rank, so
    no chunk gains from its place in the corpus."""
    descending = scores.sort(dim=1, descending=True).values
    return torch.searchsorted(-descending, -scores.contiguous(), right=False) + 1


def min_max(scores: torch.Tensor) -> torch.Tensor:
    """Each row scaled to [0, 1] over the corpus (all 0 where a row is constant)."""
    scores = scores.double()
    low = scores.min(dim=1, keepdim=True).values
    span = scores.max(dim=1, keepdim=True).values - low
    return torch.where(span > 0, (scores - low) / span.clamp_min(1e-300), torch.zeros_like(scores))


def convex(dense: torch.Tensor, lexical: torch.Tensor, dense_weight: float) -> torch.Tensor:
    """dense_weight * min-max(dense) + (1 - dense_weight) * min-max(lexical), per row."""
    return dense_weight * min_max(dense) + (1.0 - dense_weight) * min_max(lexical)
