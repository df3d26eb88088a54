"""Convex combination of min-max normalised scores (Bruch et al. 2022, arXiv 2210.11934):
w * dense + (1 - w) * BM25, each scaled to [0, 1] over the whole corpus, per query.

LlamaIndex's QueryFusionRetriever(mode="relative_score") scales over each retriever's top
`similarity_top_k` only.
"""

from __future__ import annotations

import torch
from pydantic import Field

from embedtune.config import Section
from embedtune.retrieval.fusion import FUSIONS, Fusion
from embedtune.retrieval.scores import convex


class ConvexConfig(Section):
    dense_weight: float = Field(gt=0, lt=1)  # w; BM25 gets 1 - w


@FUSIONS.register("convex")
class ConvexFusion(Fusion):
    Config = ConvexConfig

    def label(self) -> str:
        return f"convex{round(self.cfg.dense_weight * 100)}"

    def fuse(self, dense: torch.Tensor, lexical: torch.Tensor) -> torch.Tensor:
        return convex(dense, lexical, self.cfg.dense_weight)
