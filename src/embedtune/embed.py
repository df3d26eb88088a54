"""Stage `embed`: frozen base-model embeddings of every query and chunk, computed once.

Usage: python -m embedtune.embed   (reads params.yaml; run by `dvc repro`)

Writes data/embeddings/<split>.safetensors with tensors `queries` and `corpus` (L2-normalised
float32 rows, whatever `embed.dtype` the model ran in) and, in its metadata, the ids of the rows
in order. `train` and `eval` read these, so changing a training parameter never re-embeds
anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from embedtune import io
from embedtune.config import EmbedConfig, load_params
from embedtune.errors import EmbedtuneError, run_stage
from embedtune.models import encoder_dtype, pick_device, resolve_model


@dataclass(frozen=True)
class SplitEmbeddings:
    query_ids: list[str]
    queries: torch.Tensor
    corpus_ids: list[str]
    corpus: torch.Tensor


def load_encoder(cfg: EmbedConfig, for_training: bool = False):
    """The base model on `embed.device` in `embed.dtype`; in float32 when it is to be trained
    (mixed precision then comes from the trainer, see `train.mixed_precision`)."""
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
    return SplitEmbeddings(
        query_ids=query_ids,
        queries=embed_texts(
            encoder, [dataset["queries"][i] for i in query_ids], cfg.query_prefix, cfg.batch_size
        ),
        corpus_ids=corpus_ids,
        corpus=embed_texts(
            encoder,
            [dataset["corpus"][i] for i in corpus_ids],
            cfg.document_prefix,
            cfg.batch_size,
        ),
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
    from safetensors import safe_open

    if not path.is_file():
        raise EmbedtuneError(f"{path} not found: run `dvc repro embed` first")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        return SplitEmbeddings(
            query_ids=json.loads(meta["query_ids"]),
            queries=f.get_tensor("queries"),
            corpus_ids=json.loads(meta["corpus_ids"]),
            corpus=f.get_tensor("corpus"),
        )


def load_dataset(split: str) -> dict:
    path = io.QA_DIR / f"{split}.json"
    if not path.is_file():
        raise EmbedtuneError(f"{path} not found: run `dvc repro synth` first")
    return json.loads(path.read_text())


def main() -> None:
    params = load_params()
    encoder = load_encoder(params.embed)
    for split in io.SPLITS:
        emb = embed_dataset(encoder, load_dataset(split), params.embed)
        save_embeddings(io.EMBEDDINGS_DIR / f"{split}.safetensors", emb)
        print(
            f"{split:<10} {len(emb.query_ids):>5} queries, {len(emb.corpus_ids):>5} chunks, "
            f"dim {emb.corpus.shape[1]}"
        )


if __name__ == "__main__":
    run_stage("embed", main)
