"""The tuned model, whatever `train.method` made it: one interface for `eval` and for users.

An adapter maps base query embeddings (chunks keep their base embeddings); a full fine-tune
re-encodes the texts with the fine-tuned sentence-transformers model.

Usage: model = load_tuned(Path("models/tuned"), params.embed)
       model.encode_queries(texts, base_embeddings)  # float32 CPU tensor, one row per text
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import torch

from embedtune import io
from embedtune.config import EmbedConfig
from embedtune.embed import embed_texts
from embedtune.errors import EmbedtuneError
from embedtune.models import encoder_dtype, pick_device


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


class FullModel:
    """A fine-tuned sentence-transformers model: re-encodes every text, ignoring base embeddings.

    Rows are L2-normalised float32 on the CPU; each text gets its prefix first, as in `embed`.
    """

    def __init__(self, encoder, query_prefix: str, document_prefix: str, batch_size: int):
        self.encoder = encoder
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.batch_size = batch_size

    def encode_queries(self, texts: list[str], base: torch.Tensor) -> torch.Tensor:
        return embed_texts(self.encoder, texts, self.query_prefix, self.batch_size)

    def encode_corpus(self, texts: list[str], base: torch.Tensor) -> torch.Tensor:
        return embed_texts(self.encoder, texts, self.document_prefix, self.batch_size)


def load_full(folder: Path, embed: EmbedConfig | None = None) -> FullModel:
    """The fine-tuned model in `folder`; prefixes, batch size and device from `embed` when given,
    else the prefixes saved with the model (its `query`/`document` prompts)."""
    from sentence_transformers import SentenceTransformer

    device = pick_device(embed.device if embed else "auto", "embed.device")
    dtype = encoder_dtype(embed.dtype if embed else "auto", device)
    encoder = SentenceTransformer(str(folder), device=device, model_kwargs={"dtype": dtype})
    if embed is not None:
        return FullModel(encoder, embed.query_prefix, embed.document_prefix, embed.batch_size)
    prompts = encoder.prompts or {}
    return FullModel(encoder, prompts.get("query", ""), prompts.get("document", ""), 32)


def load_tuned(folder: Path = io.TUNED_DIR, embed: EmbedConfig | None = None) -> TunedModel:
    """Load what `train` saved in `folder`; `embed` gives prefixes and device for a full model."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise EmbedtuneError(f"{config_path} not found: run `dvc repro train` first")
    method = json.loads(config_path.read_text()).get("method", "adapter_linear")
    if method in ("adapter_linear", "adapter_2layer"):
        from embedtune.train import load_adapter

        return AdapterModel(load_adapter(folder))
    if method == "full":
        return load_full(folder, embed)
    raise EmbedtuneError(f"{config_path}: unknown method {method!r}")
