"""Reciprocal rank fusion (Cormack et al. 2009): sum over the two rankings of 1 / (k + rank).

Ranks are over the whole corpus, tied chunks sharing the best rank of their tie (LlamaIndex's
QueryFusionRetriever fuses only each retriever's top `similarity_top_k`, in list order).
"""

from __future__ import annotations

import torch
from pydantic import Field

from embedtune.config import Section
from embedtune.retrieval.fusion import FUSIONS, Fusion
from embedtune.retrieval.scores import competition_ranks


class RRFConfig(Section):
    k: int = Field(gt=0)  # damping constant: larger k flattens the top ranks' advantage


@FUSIONS.register("rrf")
class ReciprocalRankFusion(Fusion):
    Config = RRFConfig

    def label(self) -> str:
        return f"rrf{self.cfg.k}"

    def fuse(self, dense: torch.Tensor, lexical: torch.Tensor) -> torch.Tensor:
        k = float(self.cfg.k)
        return 1.0 / (k + competition_ranks(dense).double()) + 1.0 / (
            k + competition_ranks(lexical).double()
        )
