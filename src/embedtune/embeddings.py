"""The base embedding model and the embeddings it writes: loading, encoding, saving.

Rows are L2-normalised float32 on the CPU, whatever `embed.dtype` the model ran in; the files
are safetensors with the ids of the rows in their metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from embedtune import io
from embedtune.config import EmbedConfig
from embedtune.models import encoder_dtype, pick_device, resolve_model


@dataclass(frozen=True)
class SplitEmbeddings:
    query_ids: list[str]
    queries: torch.Tensor
    corpus_ids: list[str]
    corpus: torch.Tensor


def load_encoder(cfg: EmbedConfig, for_training: bool = False):
    """The base model on `embed.device` in `embed.dtype`; in float32 when it is to be trained
    (mixed precision then comes from the trainer, see `methods.full.mixed_precision`)."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model(cfg.model, "embed.model")
    device = pick_device(cfg.device, "embed.device")
    dtype = torch.float32 if for_training else encoder_dtype(cfg.dtype, device)
    return SentenceTransformer(path, device=device, model_kwargs={"dtype": dtype})


def embed_texts(encoder, texts: list[str], prefix: str, batch_size: int) -> torch.Tensor:
    if not texts:
        return torch.zeros((0, encoder.get_embedding_dimension()))
    vectors = encoder.encode(
        [prefix + t for t in texts],
        batch_size=batch_size,
        convert_to_tensor=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    if vectors.dtype != torch.float32:  # half precision leaves norms off 1 by up to ~1e-2
        vectors = torch.nn.functional.normalize(vectors.float(), dim=1)
    return vectors.cpu()


def embed_dataset(encoder, dataset: dict, cfg: EmbedConfig) -> SplitEmbeddings:
    """Embed the queries and corpus of one `EmbeddingQAFinetuneDataset` dict."""
    query_ids, corpus_ids = list(dataset["queries"]), list(dataset["corpus"])
    queries = [dataset["queries"][i] for i in query_ids]
    corpus = [dataset["corpus"][i] for i in corpus_ids]
    return SplitEmbeddings(
        query_ids=query_ids,
        queries=embed_texts(encoder, queries, cfg.query_prefix, cfg.batch_size),
        corpus_ids=corpus_ids,
        corpus=embed_texts(encoder, corpus, cfg.document_prefix, cfg.batch_size),
    )


def save_embeddings(path: Path, emb: SplitEmbeddings) -> None:
    from safetensors.torch import save_file

    meta = {"query_ids": json.dumps(emb.query_ids), "corpus_ids": json.dumps(emb.corpus_ids)}
    with io.atomic_path(path) as tmp:
        save_file(
            {"queries": emb.queries.contiguous(), "corpus": emb.corpus.contiguous()},
            str(tmp),
            metadata=meta,
        )


def load_embeddings(path: Path) -> SplitEmbeddings:
    tensors, meta = io.read_safetensors(path, stage="embed")
    with io.reading(path, KeyError, stage="embed"):  # not the tensors and ids `embed` writes
        return SplitEmbeddings(
            query_ids=json.loads(meta["query_ids"]),
            queries=tensors["queries"],
            corpus_ids=json.loads(meta["corpus_ids"]),
            corpus=tensors["corpus"],
        )
