"""`gist`: GISTEmbed loss, MNRL whose in-batch and mined negatives are vetted by a guide model.

The guide is a frozen copy of the base model taken before training: a candidate the base model
scores above the positive (less the margin) is treated as a likely unlabelled answer and left
out of the loss instead of being pushed away.
"""

from __future__ import annotations

import copy
from typing import Literal

from pydantic import Field

from embedtune.train.losses import LOSSES, LossConfig


class GISTConfig(LossConfig):
    name: Literal["gist"]
    scale: float = Field(gt=0)  # inverse temperature of the cosine scores
    margin_strategy: Literal["absolute", "relative"]  # how the margin below the positive counts
    margin: float = Field(ge=0)  # 0: drop candidates the guide scores above the positive


@LOSSES.register("gist")
class GIST:
    Config = GISTConfig

    @staticmethod
    def build(model, cfg: GISTConfig):
        from sentence_transformers.sentence_transformer import losses

        guide = copy.deepcopy(model).eval()
        for parameter in guide.parameters():
            parameter.requires_grad_(False)
        return losses.GISTEmbedLoss(
            model,
            guide,
            temperature=1.0 / cfg.scale,
            margin_strategy=cfg.margin_strategy,
            margin=cfg.margin,
        )
