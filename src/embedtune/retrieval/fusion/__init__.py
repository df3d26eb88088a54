"""Fusions of a dense and a lexical ranking, one module each, registered under the name that
`retrieve.fusion` uses.

A fusion turns one block of (queries, chunks) dense scores and the same block's BM25 scores
into fused scores; every row is one query over the whole corpus. To add one: a module here with

    class MyConfig(Section):
        weight: float

    @FUSIONS.register("my_fusion")
    class MyFusion(Fusion):
        Config = MyConfig
        def label(self) -> str: ...   # short, no dots: it names the candidate in metrics
        def fuse(self, dense, lexical): ...

and its candidate settings in `conf/retrieve/default.yaml` (`fusion: {my_fusion: [{weight: 1}]}`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from pydantic import ValidationError

from embedtune.config import Section, describe
from embedtune.errors import EmbedtuneError
from embedtune.io import PARAMS_FILE
from embedtune.registry import Registry


class Fusion(ABC):
    Config: ClassVar[type[Section]]

    def __init__(self, cfg: Section):
        self.cfg = cfg

    @abstractmethod
    def label(self) -> str:
        """The candidate's name after `DENSE+bm25:`, e.g. `rrf60`."""

    @abstractmethod
    def fuse(self, dense: torch.Tensor, lexical: torch.Tensor) -> torch.Tensor:
        """(queries, chunks) fused scores from the same block's dense and BM25 scores."""


FUSIONS: Registry[type[Fusion]] = Registry("retrieve.fusion", __name__)


def make_fusion(kind: str, settings: dict[str, Any], index: int) -> Fusion:
    """The fusion `kind` with one candidate's settings (`retrieve.fusion.KIND[index]`)."""
    cls = FUSIONS.get(kind)
    try:
        return cls(cls.Config.model_validate(settings, strict=True))
    except ValidationError as err:
        raise EmbedtuneError(
            describe(err, f"retrieve.fusion.{kind}[{index}]", PARAMS_FILE)
        ) from None
