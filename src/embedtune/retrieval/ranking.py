"""Where each query's relevant chunks land when every chunk is ranked by cosine similarity.

The one tie rule of the project: ties count against the model. A relevant chunk ranks after
every other chunk with the same score that is less relevant (or equally relevant and earlier in
the corpus), so a collapsed model that scores everything equally gets zero, never a perfect
score. Training-time selection, `eval` and the benchmarks all rank through `rank_scored_together`
(`rank_scored` for one retriever).

Memory grows with the corpus plus the queries, never with their product: queries are scored a
block at a time (`rank_scored`), a block holding at most about `SCORE_BLOCK_BYTES` of scores; a
scorer gives one block's (queries, chunks) scores, whatever retriever makes them (cosine, BM25,
a fusion); relevance stays sparse (`Relevant`: each query's relevant corpus columns, as the
qrels list them), and only the ranks of the relevant chunks leave the block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from embedtune.errors import EmbedtuneError

Qrels = dict[str, dict[str, float]]  # query id -> {chunk id: relevance grade > 0}
# One block's (queries, chunks) scores at 8 bytes each (fusions score in float64) at most: the
# block's rows are this over the corpus size, within [_MIN_QUERIES_PER_BLOCK, QUERIES_PER_BLOCK]
SCORE_BLOCK_BYTES = 64 * 2**20
QUERIES_PER_BLOCK = 1024  # queries scored against the corpus at once at most (small corpora)
_MIN_QUERIES_PER_BLOCK = 32  # MKL multiplies fewer than about 8 rows another way (other digits)
_PAIRS_PER_BLOCK = 1024  # (query, relevant chunk) pairs compared against the corpus at once at most
_COMPARED_PER_BLOCK = 2**21  # ... and at most this many (pair, chunk) comparisons at once
# (start, stop) rows of the queries -> their (stop - start, chunks) scores
Scorer = Callable[[int, int], torch.Tensor]
# (start, stop) rows -> (retriever name, its scores of those rows) for several retrievers
BlockScorer = Callable[[int, int], Iterable[tuple[str, torch.Tensor]]]


@dataclass(frozen=True)
class Ranked:
    """Where the relevant chunks of each query landed in one model's ranking (1-based ranks)."""

    ranks: list[np.ndarray]  # per query: ranks of its relevant chunks
    grades: list[np.ndarray]  # per query: their relevance grades, in the same order

    @property
    def best(self) -> np.ndarray:
        """Rank of each query's best-ranked relevant chunk; 0 for a query without any."""
        return np.array([int(r.min()) if len(r) else 0 for r in self.ranks], dtype=np.int64)


@dataclass(frozen=True)
class Relevant:
    """The qrels as corpus columns, sparse: query i's relevant chunks are the entries
    `bounds[i]:bounds[i + 1]` of `columns` (ascending corpus position) and `grades` (> 0)."""

    bounds: np.ndarray  # (queries + 1,) int64
    columns: np.ndarray  # (pairs,) int64
    grades: np.ndarray  # (pairs,) float32, as the dense relevance matrix held them

    def rows(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row within the block, column, grade) of every pair of queries lo..hi-1."""
        a, b = int(self.bounds[lo]), int(self.bounds[hi])
        rows = np.repeat(np.arange(hi - lo), np.diff(self.bounds[lo : hi + 1]))
        return rows, self.columns[a:b], self.grades[a:b]


def cosine_scores(queries: torch.Tensor, corpus: torch.Tensor) -> torch.Tensor:
    """(queries, chunks) cosine similarities; both sides are normalised here."""
    return F.normalize(queries.float(), dim=-1) @ F.normalize(corpus.float(), dim=-1).T


def binary_qrels(query_ids: Sequence[str], relevant: dict[str, list[str]]) -> Qrels:
    """Grade 1 for each chunk an `EmbeddingQAFinetuneDataset` lists as relevant to a query."""
    return {qid: {cid: 1.0 for cid in relevant.get(qid, [])} for qid in query_ids}


def relevant_columns(query_ids: Sequence[str], corpus_ids: Sequence[str], qrels: Qrels) -> Relevant:
    """Each query's relevant corpus columns and grades (grades that are 0 in float32 left out)."""
    column = {cid: i for i, cid in enumerate(corpus_ids)}
    bounds, columns, grades = [0], [], []
    for qid in query_ids:
        found = []
        for cid, grade in qrels.get(qid, {}).items():
            if cid not in column:
                raise EmbedtuneError(f"query {qid!r}: relevant chunk {cid!r} is not in the corpus")
            if np.float32(grade) > 0:
                found.append((column[cid], grade))
        found.sort()
        columns += [c for c, _ in found]
        grades += [g for _, g in found]
        bounds.append(len(columns))
    return Relevant(
        np.array(bounds, dtype=np.int64),
        np.array(columns, dtype=np.int64),
        np.array(grades, dtype=np.float32),
    )


def relevance_matrix(
    query_ids: Sequence[str], corpus_ids: Sequence[str], qrels: Qrels
) -> torch.Tensor:
    """(queries, chunks) relevance grades; 0 where a chunk is not relevant to a query. Dense:
    for small inputs and tests; ranking keeps relevance sparse (`relevant_columns`)."""
    relevant = relevant_columns(query_ids, corpus_ids, qrels)
    relevance = torch.zeros(len(query_ids), len(corpus_ids))
    rows, columns, grades = relevant.rows(0, len(query_ids))
    relevance[torch.from_numpy(rows), torch.from_numpy(columns)] = torch.from_numpy(grades)
    return relevance


def _scored_at_least(scores: torch.Tensor, rows: np.ndarray, own: torch.Tensor) -> torch.Tensor:
    """Per pair, the chunks of its query's row of `scores` scored at least its own score."""
    counts = torch.empty(len(rows), dtype=torch.long)
    step = max(1, min(_PAIRS_PER_BLOCK, _COMPARED_PER_BLOCK // max(1, scores.shape[1])))
    for start in range(0, len(rows), step):
        part = rows[start : start + step]
        consecutive = part[-1] - part[0] == len(part) - 1 and bool((np.diff(part) == 1).all())
        # one pair per query (the common case) compares the block's rows in place, no copy
        if consecutive:
            block = scores[part[0] : part[-1] + 1]
        else:
            block = scores[torch.from_numpy(part).to(scores.device)]
        counts[start : start + len(part)] = torch.count_nonzero(
            block >= own[start : start + len(part), None], dim=1
        )
    return counts


def _tied_behind(rows: np.ndarray, own: np.ndarray, grades: np.ndarray, columns: np.ndarray):
    """Per pair, the other relevant chunks of its query with the same score that rank behind
    it: more relevant, or equally relevant and later in the corpus."""
    order = np.lexsort((columns, grades, own, rows))  # by query, score, grade, position
    q, s = rows[order], own[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (q[1:] != q[:-1]) | (s[1:] != s[:-1])  # a new (query, score) group
    group = np.cumsum(starts) - 1
    last = np.append(np.flatnonzero(starts)[1:], len(order)) - 1  # each group's last place
    behind = np.empty(len(order), dtype=np.int64)
    behind[order] = last[group] - np.arange(len(order))
    return behind


def rank_block(
    scores: torch.Tensor, rows: np.ndarray, columns: np.ndarray, grades: np.ndarray
) -> np.ndarray:
    """Rank of each (row, column) relevant pair in its row of `scores`, ties counted against
    the model: the chunks scored at least as high as it, less those relevant chunks of the same
    query tied with it that rank behind it (`_tied_behind`), itself included in neither.

    Equal to 1 + the chunks scored higher + the chunks scored equal that are less relevant (or
    equally relevant and earlier in the corpus): a tied chunk that is not relevant has grade 0,
    below any relevant chunk's, so it always counts; only relevant ones can rank behind.
    """
    if not len(rows):
        return np.zeros(0, dtype=np.int64)
    scores = scores.detach()
    index = (torch.from_numpy(rows).to(scores.device), torch.from_numpy(columns).to(scores.device))
    own = scores[index]
    at_least = _scored_at_least(scores, rows, own).cpu().numpy()
    return at_least - _tied_behind(rows, own.cpu().numpy(), grades, columns)


def _per_query(values: np.ndarray, bounds: np.ndarray) -> list[np.ndarray]:
    return np.split(values, bounds[1:-1]) if len(bounds) > 1 else []


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
    grades = relevance[q_rows, d_cols].numpy()
    rows, columns = q_rows.numpy(), d_cols.numpy()
    ranks = rank_block(scores, rows, columns, grades)
    bounds = np.searchsorted(rows, np.arange(scores.shape[0] + 1))
    return Ranked(_per_query(ranks, bounds), _per_query(grades.astype(np.float64), bounds))


def query_blocks(count: int, size: int | None = None) -> list[tuple[int, int]]:
    """(start, stop) rows covering `count` queries in blocks of near-equal size, at most
    `size` (default `QUERIES_PER_BLOCK`); never a tiny remainder block (BLAS may round a
    one-row product differently)."""
    size = size or QUERIES_PER_BLOCK
    blocks = max(1, -(-count // size))
    bounds = [round(i * count / blocks) for i in range(blocks + 1)]
    return [(lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False) if hi > lo]


def queries_per_block(chunks: int) -> int:
    """Rows of a query block against `chunks` chunks: its float64 scores within
    `SCORE_BLOCK_BYTES`, at most `QUERIES_PER_BLOCK` and at least `_MIN_QUERIES_PER_BLOCK`."""
    fits = SCORE_BLOCK_BYTES // (8 * max(1, chunks))
    return max(min(_MIN_QUERIES_PER_BLOCK, QUERIES_PER_BLOCK), min(QUERIES_PER_BLOCK, fits))


def finite(scores: torch.Tensor) -> bool:
    """Whether every score is finite, without a (queries, chunks) mask: max and min carry a NaN
    or an infinity through."""
    if not scores.numel():
        return True
    return bool(torch.isfinite(scores.max()) and torch.isfinite(scores.min()))


def rank_scored(
    scorer: Scorer, query_ids: Sequence[str], corpus_ids: Sequence[str], qrels: Qrels
) -> Ranked:
    """Place every query's relevant chunks in the ranking that `scorer` gives, a block of
    queries at a time (`queries_per_block`); only the relevant chunks' ranks leave a block."""
    together = rank_scored_together(
        [""], lambda lo, hi: [("", scorer(lo, hi))], query_ids, corpus_ids, qrels
    )
    return together[""]


def rank_scored_together(
    names: Sequence[str],
    scorer: BlockScorer,
    query_ids: Sequence[str],
    corpus_ids: Sequence[str],
    qrels: Qrels,
) -> dict[str, Ranked]:
    """`rank_scored` for several retrievers at once: `scorer(lo, hi)` gives each one's scores
    of the block in turn, as (name, scores), so they can share what they have in common (the
    same dense and BM25 scores for every fusion); one block of queries is held at a time."""
    relevant = relevant_columns(query_ids, corpus_ids, qrels)  # unknown chunks stop us first
    ranks = {name: np.empty(len(relevant.columns), dtype=np.int64) for name in names}
    for lo, hi in query_blocks(len(query_ids), queries_per_block(len(corpus_ids))):
        a, b = int(relevant.bounds[lo]), int(relevant.bounds[hi])
        pairs = relevant.rows(lo, hi)
        for name, scores in scorer(lo, hi):
            if not finite(scores):  # NaN would compare as never ranked higher
                raise EmbedtuneError(
                    "non-finite similarity scores (NaN or inf): the embeddings diverged; "
                    "with a trained model, try a lower train.lr"
                )
            ranks[name][a:b] = rank_block(scores, *pairs)
            del scores  # the next scores take its place, not its side
    grades = _per_query(relevant.grades.astype(np.float64), relevant.bounds)
    return {name: Ranked(_per_query(ranks[name], relevant.bounds), grades) for name in names}


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
