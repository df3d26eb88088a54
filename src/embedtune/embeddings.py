"""The base embedding model and the embeddings it writes: loading, encoding, saving.

Rows are L2-normalised float32 on the CPU, whatever `embed.dtype` the model ran in; the files
are safetensors with the ids of the rows in their metadata.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from embedtune import io, progress
from embedtune.config import EmbedConfig
from embedtune.errors import EmbedtuneError
from embedtune.weights import encoder_dtype, pick_device, resolve_model


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


def embed_texts(
    encoder, texts: list[str], prefix: str, batch_size: int, pool: dict | None = None
) -> torch.Tensor:
    """L2-normalised float32 rows on the CPU; with `pool` (sentence-transformers'
    `start_multi_process_pool`), encoded by its processes."""
    if not texts:
        return torch.zeros((0, encoder.get_embedding_dimension()))
    vectors = encoder.encode(
        [prefix + t for t in texts],
        batch_size=batch_size,
        convert_to_tensor=True,
        normalize_embeddings=True,
        show_progress_bar=False,
        pool=pool,
    )
    if vectors.dtype != torch.float32:  # half precision leaves norms off 1 by up to ~1e-2
        vectors = torch.nn.functional.normalize(vectors.float(), dim=1)
    return vectors.cpu()


def embed_dataset(
    encoder, dataset: dict, cfg: EmbedConfig, blocks: BlockStore | None = None
) -> SplitEmbeddings:
    """Embed the queries and corpus of one `EmbeddingQAFinetuneDataset` dict; with `blocks`,
    block by block, each block kept as soon as it is encoded (see `BlockStore`)."""
    query_ids, corpus_ids = list(dataset["queries"]), list(dataset["corpus"])
    queries = [dataset["queries"][i] for i in query_ids]
    corpus = [dataset["corpus"][i] for i in corpus_ids]
    if blocks is None:
        blocks = BlockStore(encoder, cfg.batch_size)
    return SplitEmbeddings(
        query_ids=query_ids,
        queries=blocks.embed(queries, cfg.query_prefix),
        corpus_ids=corpus_ids,
        corpus=blocks.embed(corpus, cfg.document_prefix),
    )


class BlockStore:
    """Encodes texts `BLOCK_TEXTS` at a time. With a `folder`, each block's rows are written
    there as soon as they are encoded, under a name derived from its prefix and texts, and read
    back instead of encoded again (a damaged block is encoded again): a killed `embed` resumes
    where it stopped, and `eval` embeds a benchmark once per model. The caller gives each model
    and dtype its own folder (`encoder_key`). With `read_only`, blocks are read from `folder`
    but none is written. A list shorter than a block is encoded in one call, exactly as
    `embed_texts` does."""

    BLOCK_TEXTS = 8192

    def __init__(
        self,
        encoder,
        batch_size: int,
        folder: Path | None = None,
        pool: dict | None = None,
        read_only: bool = False,
    ):
        self.encoder, self.batch_size, self.folder, self.pool = encoder, batch_size, folder, pool
        self.read_only = read_only
        self.reused = 0  # blocks read back from `folder`
        self.encoded = 0  # blocks encoded by the model

    def embed(self, texts: list[str], prefix: str) -> torch.Tensor:
        if not texts:
            return embed_texts(self.encoder, texts, prefix, self.batch_size)
        size, rows = self.BLOCK_TEXTS, []
        for i in range(0, len(texts), size):
            rows.append(self._block(texts[i : i + size], prefix))
            progress.advance(len(rows[-1]), "texts")  # to the stage's task, if it keeps one
        return torch.cat(rows)

    def _block(self, texts: list[str], prefix: str) -> torch.Tensor:
        path = (
            None if self.folder is None else self.folder / f"{block_key(texts, prefix)}.safetensors"
        )
        if path is not None and path.is_file():
            try:
                rows = io.read_safetensors(path)[0]["rows"]
            except (EmbedtuneError, KeyError):  # half-written by a killed run: encode it again
                rows = None
            if rows is not None and len(rows) == len(texts):
                self.reused += 1
                return rows
        rows = embed_texts(self.encoder, texts, prefix, self.batch_size, self.pool)
        self.encoded += 1
        if path is not None and not self.read_only:
            from safetensors.torch import save_file

            with io.atomic_path(path) as tmp:
                save_file({"rows": rows.contiguous()}, str(tmp))
        return rows


def block_key(texts: list[str], prefix: str) -> str:
    digest = hashlib.sha256(json.dumps([prefix, texts], ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()[:32]


def encoder_key(encoder, *identity: str) -> str:
    """A folder name for one model's blocks: `identity` (what the model is) with the kind of
    device and the torch dtype it runs in, since the rows' numerics differ by each."""
    what = [*identity, str(encoder.device).split(":")[0], str(encoder.dtype)]
    return hashlib.sha256(json.dumps(what).encode("utf-8")).hexdigest()[:16]


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
