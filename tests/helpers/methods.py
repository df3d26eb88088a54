"""Shared inputs of the methods' tests: synthetic embeddings for the adapters, a dozen text
pairs (and a validation split beside them) and small, fast settings for the `full` method."""

from __future__ import annotations

import pydoc_data.topics

import torch
import torch.nn.functional as F

from embedtune.embeddings import SplitEmbeddings
from embedtune.retrieval.metrics import metric_at
from embedtune.retrieval.ranking import binary_qrels, rank
from tests.helpers import cfg

# --- adapters: cached embeddings ------------------------------------------------------------


def split(queries, corpus, relevant: dict[int, list[int]]) -> tuple[SplitEmbeddings, dict]:
    """A split whose query i is relevant to the chunks `relevant[i]` (row numbers)."""
    qids = [f"q{i}" for i in range(len(queries))]
    cids = [f"c{i}" for i in range(len(corpus))]
    emb = SplitEmbeddings(qids, torch.as_tensor(queries), cids, torch.as_tensor(corpus))
    docs = {qids[q]: [cids[c] for c in cs] for q, cs in relevant.items()}
    dataset = {
        "queries": {q: f"question {q}" for q in qids},
        "corpus": {c: f"chunk {c}" for c in cids},
        "relevant_docs": docs,
    }
    return emb, dataset


def synthetic(seed: int = 0, n_chunks: int = 24, dim: int = 16, noise: float = 0.3):
    """(train, test) splits whose queries are a fixed rotation of their chunk plus noise: the
    base model ranks badly, a linear map (the inverse rotation) ranks well."""
    g = torch.Generator().manual_seed(seed)
    corpus = F.normalize(torch.randn(n_chunks, dim, generator=g), dim=-1)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))

    def queries(per_chunk: int) -> tuple[SplitEmbeddings, dict]:
        rows = torch.arange(n_chunks).repeat_interleave(per_chunk)
        jitter = noise * torch.randn(len(rows), dim, generator=g) / dim**0.5
        q = F.normalize(corpus[rows] @ rotation.T + jitter, dim=-1)
        return split(q, corpus, {i: [r] for i, r in enumerate(rows.tolist())})

    return queries(3), queries(2)  # train, test


def hit_rate_at_1(adapter, emb: SplitEmbeddings, dataset: dict) -> float:
    """Hit rate@1 of the adapter's queries, ranked as eval ranks."""
    with torch.no_grad():
        queries = adapter(emb.queries)
    qrels = binary_qrels(emb.query_ids, dataset["relevant_docs"])
    return metric_at(rank(queries, emb.corpus, emb.query_ids, emb.corpus_ids, qrels), "hit_rate", 1)


# --- full: texts ---------------------------------------------------------------------------

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
# One or two epochs of a few steps at max_seq_length 64: seconds on a CPU.
FAST = {
    "lr": 1e-4,
    "epochs": 1,
    "batch_size": 4,
    "max_seq_length": 64,
    "holdout_fraction": 0.25,
    "holdout_min_questions": 0,
    "selection_confidence": None,  # training is always kept: these tests are its mechanics
    "warmup_ratio": 0.1,
    "patience": 0,
}


def full_cfg(*overrides: str, **updates):
    return cfg("train", "train=full", *overrides, **{**FAST, **updates})


def embed_cfg(**updates):
    prefixes = {"batch_size": 16, "query_prefix": "query: ", "document_prefix": "passage: "}
    return cfg("embed", **{**prefixes, **updates})


def tiny_dataset() -> dict:
    """A dozen (question, chunk) pairs from the Python reference that ships with CPython."""
    topics = sorted(pydoc_data.topics.topics)[:12]
    text = pydoc_data.topics.topics
    return {
        "queries": {
            f"q{i}": f"What does the reference say about {t}?" for i, t in enumerate(topics)
        },
        "corpus": {f"c{i}": " ".join(text[t].split()[:60]) for i, t in enumerate(topics)},
        "relevant_docs": {f"q{i}": [f"c{i}"] for i in range(len(topics))},
    }


def validation_dataset() -> dict:
    """Questions and chunks on Python reference topics the training split does not cover."""
    topics = sorted(pydoc_data.topics.topics)[12:20]  # after tiny_dataset's
    text = pydoc_data.topics.topics
    return {
        "queries": {f"v{i}": f"How is {t} used?" for i, t in enumerate(topics)},
        "corpus": {f"d{i}": " ".join(text[t].split()[:50]) for i, t in enumerate(topics)},
        "relevant_docs": {f"v{i}": [f"d{i}"] for i in range(len(topics))},
    }
