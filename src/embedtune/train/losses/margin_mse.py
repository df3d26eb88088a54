"""`margin_mse`: distillation from a cross-encoder (GPL, arXiv 2112.07577).

The model learns to reproduce the cross-encoder's score margins between a question's positive
and each of its mined negatives (`mine.cross_encoder` writes the scores; `train.hard_negatives`
of them per question).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from embedtune.train.losses import LOSSES, LossConfig


class MarginMSEConfig(LossConfig):
    name: Literal["margin_mse"]
    needs_scores: ClassVar[bool] = True


@LOSSES.register("margin_mse")
class MarginMSE:
    Config = MarginMSEConfig

    @staticmethod
    def build(model, cfg: MarginMSEConfig):
        from sentence_transformers.sentence_transformer import losses

        return losses.MarginMSELoss(model)
