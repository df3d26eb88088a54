"""The held-out slice of the training split that picks the epoch (never the validation split).

The questions of `train.holdout_fraction` of the training chunks are held out; their MRR@10
against the whole training corpus, ranked and scored exactly as `eval` does, picks the epoch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Iterable, Sequence

import torch

from embedtune.retrieval.metrics import metric_at
from embedtune.retrieval.ranking import binary_qrels, rank

HELDOUT_METRIC, HELDOUT_K = "mrr", 10
HELDOUT_NAME = f"{HELDOUT_METRIC}@{HELDOUT_K}"


def holdout_chunks(chunk_ids: Iterable[str], fraction: float, seed: int) -> set[str]:
    """The `fraction` of the chunks (rounded) whose seeded hash of the id is smallest."""
    ids = sorted(set(chunk_ids))
    count = math.floor(fraction * len(ids) + 0.5)

    def key(cid: str) -> str:
        return hashlib.sha256(f"{seed}\0{cid}".encode()).hexdigest()

    return set(sorted(ids, key=key)[:count])


def split_queries(
    query_ids: Iterable[str], relevant: dict[str, list[str]], heldout: Collection[str]
) -> tuple[list[str], list[str]]:
    """(training, held-out) labelled query ids; a query of any held-out chunk is held out."""
    train, held = [], []
    for qid in query_ids:
        chunks = relevant.get(qid, [])
        if chunks:
            (held if any(c in heldout for c in chunks) else train).append(qid)
    return train, held


def heldout_split(dataset: dict, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(training, held-out) query ids of a split, in the order of `dataset["queries"]`."""
    relevant = dataset["relevant_docs"]
    with_questions = {c for qid in dataset["queries"] for c in relevant.get(qid, [])}
    heldout = holdout_chunks(with_questions, fraction, seed)
    return split_queries(dataset["queries"], relevant, heldout)


def heldout_score(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    query_ids: Sequence[str],
    corpus_ids: Sequence[str],
    relevant: dict[str, list[str]],
) -> float:
    """MRR@10 of the held-out questions' embeddings against the training corpus."""
    ranked = rank(queries, corpus, query_ids, corpus_ids, binary_qrels(query_ids, relevant))
    return metric_at(ranked, HELDOUT_METRIC, HELDOUT_K)
