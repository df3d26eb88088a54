"""What `train` makes and every scorer of it (`select`, `eval`, `export`, `embedtune search`)
uses, whatever the training method: the interface lives here, the methods in
`embedtune.train.methods`."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch


class TunedModel(Protocol):
    """What `train` makes and `eval` scores, whatever the method.

    A model that encodes texts itself, rather than mapping their base embeddings, may also have
    `cached(root, read_only) -> TunedModel`: the same model, keeping its rows in a folder under
    `root` named by its weights, so `eval` embeds a benchmark once per model (`FullModel`).
    """

    method: str

    def encode_queries(self, texts: list[str], base: torch.Tensor) -> torch.Tensor:
        """Embeddings of queries, given their texts and their base-model embeddings."""

    def encode_corpus(self, texts: list[str], base: torch.Tensor) -> torch.Tensor:
        """Embeddings of chunks, given their texts and their base-model embeddings."""

    def save(self, folder: Path) -> None:
        """Write the model into the empty `folder`, with config.json naming its method."""
