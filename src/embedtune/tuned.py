"""The tuned model, whatever `train.method` made it: one interface for `eval` and for users.

An adapter maps base query embeddings (chunks keep their base embeddings); a full fine-tune
re-encodes the texts with the fine-tuned sentence-transformers model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import torch

from embedtune import io
from embedtune.config import EmbedConfig
from embedtune.errors import EmbedtuneError


class TunedModel(Protocol):
    def encode_queries(self, texts: list[str], base: torch.Tensor) -> torch.Tensor:
        """Embeddings of queries, given their texts and their base-model embeddings."""

    def encode_corpus(self, texts: list[str], base: torch.Tensor) -> torch.Tensor:
        """Embeddings of chunks, given their texts and their base-model embeddings."""


class AdapterModel:
    """Base embeddings, with the adapter applied to queries only."""

    def __init__(self, adapter: torch.nn.Module):
        self.adapter = adapter.eval()

    def encode_queries(self, texts: list[str], base: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.adapter(base)

    def encode_corpus(self, texts: list[str], base: torch.Tensor) -> torch.Tensor:
        return base


def load_tuned(folder: Path = io.TUNED_DIR, embed: EmbedConfig | None = None) -> TunedModel:
    """Load what `train` saved in `folder`; `embed` gives prefixes and device for a full model."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise EmbedtuneError(f"{config_path} not found: run `dvc repro train` first")
    method = json.loads(config_path.read_text()).get("method", "adapter_linear")
    if method.startswith("adapter"):
        from embedtune.train import load_adapter

        return AdapterModel(load_adapter(folder))
    raise EmbedtuneError(f"{config_path}: unknown method {method!r}")
