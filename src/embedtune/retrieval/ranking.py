"""Where each query's relevant chunks land when every chunk is ranked by cosine similarity.

The one tie rule of the project: ties count against the model. A relevant chunk ranks after
every other chunk with the same score that is less relevant (or equally relevant and earlier in
the corpus), so a collapsed model that scores everything equally gets zero, never a perfect
score. Training-time selection, `eval` and the benchmarks all rank through `rank_relevant`.

Queries are scored a block at a time (`rank_scored`): a scorer gives one block's (queries,
chunks) scores, whatever retriever makes them (cosine, BM25, a fusion), and only the ranks of
the relevant chunks leave the block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from embedtune.errors import EmbedtuneError

Qrels = dict[str, dict[str, float]]  # query id -> {chunk id: relevance grade > 0}
_PAIRS_PER_BLOCK = 256  # (query, relevant chunk) pairs compared against the corpus at once
QUERIES_PER_BLOCK = 1024  # queries scored against the corpus at once (blocks of near-equal size)
# (start, stop) rows of the queries -> their (stop - start, chunks) scores
Scorer = Callable[[int, int], torch.Tensor]


@dataclass(frozen=True)
class Ranked:
    """Where the relevant chunks of each query landed in one model's ranking (1-based ranks)."""

    ranks: list[np.ndarray]  # per query: ranks of its relevant chunks
    grades: list[np.ndarray]  # per query: their relevance grades, in the same order

    @property
    def best(self) -> np.ndarray:
        """Rank of each query's best-ranked relevant chunk; 0 for a query without any."""
        return np.array([int(r.min()) if len(r) else 0 for r in self.ranks], dtype=np.int64)


def cosine_scores(queries: torch.Tensor, corpus: torch.Tensor) -> torch.Tensor:
    """(queries, chunks) cosine similarities; both sides are normalised here."""
    return F.normalize(queries.float(), dim=-1) @ F.normalize(corpus.float(), dim=-1).T


def binary_qrels(query_ids: Sequence[str], relevant: dict[str, list[str]]) -> Qrels:
    """Grade 1 for each chunk an `EmbeddingQAFinetuneDataset` lists as relevant to a query."""
    return {qid: {cid: 1.0 for cid in relevant.get(qid, [])} for qid in query_ids}


def relevance_matrix(
    query_ids: Sequence[str], corpus_ids: Sequence[str], qrels: Qrels
) -> torch.Tensor:
    """(queries, chunks) relevance grades; 0 where a chunk is not relevant to a query."""
    column = {cid: i for i, cid in enumerate(corpus_ids)}
    relevance = torch.zeros(len(query_ids), len(corpus_ids))
    for qi, qid in enumerate(query_ids):
        for cid, grade in qrels.get(qid, {}).items():
            if cid not in column:
                raise EmbedtuneError(f"query {qid!r}: relevant chunk {cid!r} is not in the corpus")
            if grade > 0:
                relevance[qi, column[cid]] = float(grade)
    return relevance


def rank_relevant(scores: torch.Tensor, relevance: torch.Tensor) -> Ranked:
    """Rank of every relevant chunk of every query, ties counted against the model.

    A relevant chunk's rank is 1 + the chunks scored higher + the chunks scored equal that are
    less relevant (or equally relevant and earlier in the corpus).

    Args:
        scores: (queries, chunks) similarities.
        relevance: (queries, chunks) grades, 0 for chunks that are not relevant.

    Returns:
        Per query, the ranks and grades of its relevant chunks (empty arrays when it has none).
    """
    q_rows, d_cols = torch.nonzero(relevance > 0, as_tuple=True)
    pair_ranks = torch.empty(len(q_rows), dtype=torch.long)
    positions = torch.arange(scores.shape[1])
    for start in range(0, len(q_rows), _PAIRS_PER_BLOCK):
        q, d = q_rows[start : start + _PAIRS_PER_BLOCK], d_cols[start : start + _PAIRS_PER_BLOCK]
        row_scores, row_grades = scores[q], relevance[q]
        own_score, own_grade = row_scores[torch.arange(len(q)), d], relevance[q, d]
        tied = row_scores == own_score[:, None]
        ahead = (row_scores > own_score[:, None]) | (
            tied
            & (
                (row_grades < own_grade[:, None])
                | ((row_grades == own_grade[:, None]) & (positions < d[:, None]))
            )
        )
        pair_ranks[start : start + len(q)] = ahead.sum(dim=1) + 1
    grades = relevance[q_rows, d_cols]
    ranks_out, grades_out = [], []
    bounds = torch.searchsorted(q_rows, torch.arange(scores.shape[0] + 1))
    for qi in range(scores.shape[0]):
        lo, hi = int(bounds[qi]), int(bounds[qi + 1])
        ranks_out.append(pair_ranks[lo:hi].numpy())
        grades_out.append(grades[lo:hi].double().numpy())
    return Ranked(ranks_out, grades_out)


def query_blocks(count: int, size: int | None = None) -> list[tuple[int, int]]:
    """(start, stop) rows covering `count` queries in blocks of near-equal size, at most
    `size` (default `QUERIES_PER_BLOCK`); never a tiny remainder block (BLAS may round a
    one-row product differently)."""
    size = size or QUERIES_PER_BLOCK
    blocks = max(1, -(-count // size))
    bounds = [round(i * count / blocks) for i in range(blocks + 1)]
    return [(lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False) if hi > lo]


def rank_scored(
    scorer: Scorer, query_ids: Sequence[str], corpus_ids: Sequence[str], qrels: Qrels
) -> Ranked:
    """Place every query's relevant chunks in the ranking that `scorer` gives, a block of
    queries at a time."""
    ranks, grades = [], []
    for lo, hi in query_blocks(len(query_ids)):
        scores = scorer(lo, hi)
        if not torch.isfinite(scores).all():  # NaN would compare as never ranked higher
            raise EmbedtuneError(
                "non-finite similarity scores (NaN or inf): the embeddings diverged; "
                "with a trained model, try a lower train.lr"
            )
        block = rank_relevant(scores, relevance_matrix(query_ids[lo:hi], corpus_ids, qrels))
        ranks += block.ranks
        grades += block.grades
    return Ranked(ranks, grades)


def cosine_scorer(queries: torch.Tensor, corpus: torch.Tensor) -> Scorer:
    """A scorer of cosine similarities between rows of `queries` and the corpus."""
    corpus = F.normalize(corpus.float(), dim=-1)
    return lambda lo, hi: F.normalize(queries[lo:hi].float(), dim=-1) @ corpus.T


def rank(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    query_ids: Sequence[str],
    corpus_ids: Sequence[str],
    qrels: Qrels,
) -> Ranked:
    """Rank the corpus for every query by cosine similarity and place the relevant chunks."""
    return rank_scored(cosine_scorer(queries, corpus), query_ids, corpus_ids, qrels)
