"""`cached_mnrl`: MNRL with gradient caching, for large batches in small memory."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from embedtune.train.losses import LOSSES, LossConfig


class CachedMNRLConfig(LossConfig):
    name: Literal["cached_mnrl"]
    scale: float = Field(gt=0)  # inverse temperature of the cosine scores
    mini_batch_size: int = Field(gt=0)  # examples per forward pass


@LOSSES.register("cached_mnrl")
class CachedMNRL:
    Config = CachedMNRLConfig

    @staticmethod
    def build(model, cfg: CachedMNRLConfig):
        from sentence_transformers.sentence_transformer import losses

        return losses.CachedMultipleNegativesRankingLoss(
            model, scale=cfg.scale, mini_batch_size=cfg.mini_batch_size
        )
