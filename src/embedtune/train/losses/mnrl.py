"""`mnrl`: multiple negatives ranking loss (in-batch negatives, plus any mined hard negatives)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from embedtune.train.losses import LOSSES, LossConfig


class MNRLConfig(LossConfig):
    name: Literal["mnrl"]
    scale: float = Field(gt=0)  # inverse temperature of the cosine scores


@LOSSES.register("mnrl")
class MNRL:
    Config = MNRLConfig

    @staticmethod
    def build(model, cfg: MNRLConfig):
        from sentence_transformers.sentence_transformer import losses

        return losses.MultipleNegativesRankingLoss(model, scale=cfg.scale)
