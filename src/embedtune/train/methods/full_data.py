"""Training rows of the `full` method: (question, chunk[, hard negatives][, scores]) texts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from embedtune.config import EmbedConfig
from embedtune.errors import EmbedtuneError


def padded(found: list[str], count: int, others: Sequence[str], generator) -> list[str]:
    """`count` negatives: the mined ones, repeated when fewer; random `others` when none."""
    if found:
        return [found[i % len(found)] for i in range(count)]
    if not others:
        raise EmbedtuneError("a training question has no other chunk to be its negative")
    picks = torch.randint(len(others), (count,), generator=generator).tolist()
    return [others[i] for i in picks]


def training_columns(
    dataset: dict,
    train_ids: Sequence[str],
    negatives: Callable[[str], list[str]],
    count: int,
    embed: EmbedConfig,
    seed: int,
    scores: dict[str, list[float]] | None = None,
) -> dict[str, list]:
    """Columns anchor, positive[, negative_1..count][, label] of prefixed texts, one row per
    (question, chunk).

    Negatives are the question's first `count` mined ones (`negatives(question id)`, chunk ids);
    a question with fewer repeats them, one with none gets random chunks other than its own
    (seeded). With `scores` (question id -> [positive, negatives...], a cross-encoder's), the
    `label` column carries them for distillation, and questions without `count` scored
    negatives are left out.
    """
    relevant, corpus, queries = dataset["relevant_docs"], dataset["corpus"], dataset["queries"]
    if scores is not None:
        train_ids = [q for q in train_ids if len(scores.get(q, ())) > count]
        if not train_ids:
            raise EmbedtuneError(
                f"no training question has {count} scored negatives: lower train.hard_negatives "
                "or raise mine.negatives (see metrics/mine.json)"
            )
    pairs = [(qid, cid) for qid in train_ids for cid in relevant[qid]]
    columns: dict[str, list] = {
        "anchor": [embed.query_prefix + queries[qid] for qid, _ in pairs],
        "positive": [embed.document_prefix + corpus[cid] for _, cid in pairs],
    }
    if count == 0:
        return columns
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for qid, _ in pairs:
        found, others = negatives(qid)[:count], []
        if not found:
            own = {corpus[c] for c in relevant[qid]}
            others = [c for c in corpus if corpus[c] not in own]
        rows.append(padded(found, count, others, generator))
    for n in range(count):
        columns[f"negative_{n + 1}"] = [embed.document_prefix + corpus[r[n]] for r in rows]
    if scores is not None:
        columns["label"] = [scores[qid][: count + 1] for qid, _ in pairs]
    return columns
