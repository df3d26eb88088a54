"""Losses of the `full` method (sentence-transformers losses), one module each.

A loss module registers a builder and its config under the name `train.loss.name` selects:

    class MyLossConfig(LossConfig):
        name: Literal["mine"]
        margin: float
        needs_scores: ClassVar[bool] = False  # True: learns from cross-encoder scores

    @LOSSES.register("mine")
    class MyLoss:
        Config = MyLossConfig
        @staticmethod
        def build(model, cfg): ...   # a sentence-transformers loss for `model`

plus `conf/train/loss/mine.yaml` (`-S train/loss=mine` picks it).
"""

from __future__ import annotations

from typing import Any, ClassVar

from embedtune.config import Section
from embedtune.errors import EmbedtuneError
from embedtune.registry import Registry

LOSSES: Registry[Any] = Registry("train.loss.name", __name__)


class LossConfig(Section):
    name: str

    # whether the loss learns from teacher scores (a `label` column; mine.cross_encoder's)
    needs_scores: ClassVar[bool] = False

    def teacher_scores(self, inputs) -> dict[str, list[float]] | None:
        """[positive, negatives...] teacher scores per training question: the cross-encoder's
        that `mine` wrote, unless the loss brings its own teacher."""
        return inputs.mined.scores if inputs.mined is not None else None


def build_loss(model, cfg: LossConfig):
    return LOSSES.get(cfg.name).build(model, cfg)


def loss_config(raw: Any) -> LossConfig:
    """The `train.loss` mapping, validated by the schema of the loss it names."""
    if not isinstance(raw, dict):
        raise EmbedtuneError(f"train.loss must be a mapping, got {raw!r}")
    return LOSSES.get(raw.get("name")).Config.model_validate(raw, strict=True)
