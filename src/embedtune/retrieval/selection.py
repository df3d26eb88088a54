"""The held-out slice of the training split, and the selection rule that it decides.

The questions of `train.holdout_fraction` of the training chunks (at least
`train.holdout_min_questions` questions) are held out (never the validation split); each
candidate ranks the whole training corpus for them, scored as `eval` scores. One rule,
`beats_base`, decides twice: `select_epoch` (in `train`) keeps the best trained epoch only when
its MRR@10 gain over the untrained model is clear of the slice's noise (paired bootstrap interval
at `train.selection_confidence` above 0), and `select_retriever` (stage `select`) ships the best
candidate retriever only when its gain over the dense base is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import torch

from embedtune.retrieval.bootstrap import paired_bootstrap
from embedtune.retrieval.metrics import METRICS
from embedtune.retrieval.ranking import binary_qrels, rank
from embedtune.sampling import by_hash, share

HELDOUT_METRIC, HELDOUT_K = "mrr", 10
HELDOUT_NAME = f"{HELDOUT_METRIC}@{HELDOUT_K}"
SELECTION_RESAMPLES = 1000  # paired bootstrap resamples of the selection rule


def heldout_chunks(
    chunk_ids: Iterable[str],
    fraction: float,
    seed: int,
    questions: Mapping[str, int] | None = None,
    min_questions: int = 0,
) -> set[str]:
    """The `fraction` of the chunks (rounded) whose seeded hash of the id is smallest, and more
    in the same order until their `questions` (chunk -> count) reach `min_questions`, as long as
    at least half of the questions stay for training. Nothing when `fraction` is 0."""
    ids = set(chunk_ids)
    if fraction == 0:
        return set()
    ordered = by_hash(ids, seed)
    count = share(len(ids), fraction)
    if questions is not None and min_questions:
        total, held = sum(questions.get(c, 0) for c in ids), 0
        for i, cid in enumerate(ordered):
            n = questions.get(cid, 0)
            if i >= count and (held >= min_questions or 2 * (held + n) > total):
                break
            held += n
            count = max(count, i + 1)
    return set(ordered[:count])


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


def heldout_questions(
    query_ids: Sequence[str], fraction: float, seed: int, min_questions: int = 0
) -> set[str]:
    """`fraction` of the questions (at least `min_questions`, at most half), by seeded hash."""
    if fraction == 0:
        return set()
    count = max(share(len(query_ids), fraction), min(min_questions, len(query_ids) // 2))
    return set(by_hash(query_ids, seed, "question")[:count])


def heldout_split(
    dataset: dict,
    fraction: float,
    seed: int,
    min_questions: int = 0,
    query_ids: Sequence[str] | None = None,
    unit: Literal["chunk", "question"] = "chunk",
) -> tuple[list[str], list[str]]:
    """(training, held-out) labelled ids of `query_ids` (default: every query of the split), in
    order.

    By chunk (the default) the slice is whole chunks: `fraction` of those with questions, grown
    until it holds `min_questions` questions (see `heldout_chunks`), so it scores unseen chunks.
    By question it is `fraction` of the questions, whose chunks may have training questions too
    (for methods that only change the chunks they were tuned on).
    """
    relevant = dataset["relevant_docs"]
    query_ids = list(dataset["queries"]) if query_ids is None else list(query_ids)
    if unit == "question":
        labelled = [q for q in query_ids if relevant.get(q)]
        held = heldout_questions(labelled, fraction, seed, min_questions)
        return [q for q in labelled if q not in held], [q for q in labelled if q in held]
    per_chunk = Counter(c for qid in query_ids for c in relevant.get(qid, []))
    heldout = heldout_chunks(per_chunk, fraction, seed, per_chunk, min_questions)
    return split_queries(query_ids, relevant, heldout)


def heldout_per_query(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    query_ids: Sequence[str],
    corpus_ids: Sequence[str],
    relevant: dict[str, list[str]],
) -> np.ndarray:
    """MRR@10 of each held-out question against the training corpus."""
    ranked = rank(queries, corpus, query_ids, corpus_ids, binary_qrels(query_ids, relevant))
    return METRICS.get(HELDOUT_METRIC)(ranked, HELDOUT_K)


def heldout_score(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    query_ids: Sequence[str],
    corpus_ids: Sequence[str],
    relevant: dict[str, list[str]],
) -> float:
    """MRR@10 of the held-out questions' embeddings against the training corpus (their mean)."""
    values = heldout_per_query(queries, corpus, query_ids, corpus_ids, relevant)
    return float(values.mean()) if len(values) else 0.0


def gain_over_base(
    base: np.ndarray, challenger: np.ndarray, confidence: float | None, seed: int
) -> dict:
    """Held-out MRR@10 of the challenger minus the base: {diff, low, high}, the paired
    bootstrap interval at `confidence` (bounds None when `confidence` is 0 or None)."""
    resamples = SELECTION_RESAMPLES if confidence else 0
    delta = paired_bootstrap(
        {HELDOUT_NAME: base}, {HELDOUT_NAME: challenger}, resamples, confidence or 0.5, seed
    )
    return delta[HELDOUT_NAME]


def beats_base(gain: dict, confidence: float | None) -> bool:
    """The selection rule: the challenger (a trained epoch, a candidate retriever) replaces the
    base only when its held-out gain is clear of the slice's noise (interval above 0), or, with
    `confidence` 0, when its mean gain is above 0; with `confidence` None it always does (the
    base is no candidate)."""
    if confidence is None:
        return True
    return (gain["low"] if gain["low"] is not None else gain["diff"]) > 0


def select_epoch(
    untrained: np.ndarray, best_epoch: int, best: np.ndarray, cfg, seed: int, log
) -> int:
    """The selection rule's verdict on the best trained epoch's held-out values against the
    untrained model's: the epoch kept (`best_epoch`, or 0 for the untrained model), reported to
    `log.selected` with the gain. `cfg` carries `selection_confidence`."""
    gain = gain_over_base(untrained, best, cfg.selection_confidence, seed)
    kept = best_epoch if beats_base(gain, cfg.selection_confidence) else 0
    log.selected(best_epoch, kept, gain)
    return kept


def select_retriever(
    per_query: Mapping[str, np.ndarray], confidence: float | None, seed: int
) -> dict:
    """The selection rule over candidate retrievers: the best held-out MRR@10 (a tie goes to
    the candidate listed first), shipped only when its gain over the dense base ("base") is
    clear of the slice's noise, else the dense base.

    Args:
        per_query: candidate name -> held-out MRR@10 per question, in the order ties prefer.
        confidence: `train.selection_confidence` (see `beats_base`).

    Returns:
        {"best": name, "shipped": name, "gain_mrr@10": {diff, low, high} of best over base,
        "mrr@10": {name: mean}}.
    """
    means = {name: float(values.mean()) for name, values in per_query.items()}
    best = max(means, key=means.__getitem__)  # the first of equal means
    gain = gain_over_base(per_query["base"], per_query[best], confidence, seed)
    shipped = best if best != "base" and beats_base(gain, confidence) else "base"
    return {"best": best, "shipped": shipped, f"gain_{HELDOUT_NAME}": gain, HELDOUT_NAME: means}
