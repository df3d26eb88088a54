"""Training rows of the `full` method: (question, chunk[, hard negatives]) texts."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

from embedtune.config import EmbedConfig
from embedtune.embeddings import embed_texts
from embedtune.errors import EmbedtuneError


def rank_window_negatives(
    scores: torch.Tensor,
    gold: torch.Tensor,
    ranks: Sequence[int],
    count: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """For each query, `count` chunks drawn at random from ranks [first, last] of the non-gold ones.

    Args:
        scores: [queries, chunks] base-model similarities.
        gold: [queries, chunks] True for the query's own (relevant) chunks: never a negative.
        ranks: [first, last], 1-based, counted among the non-gold chunks by descending score.
        count: negatives per query.
        generator: seeds the draw.

    Returns:
        [queries, count] chunk indices, in descending score order.
    """
    first, last = ranks
    order = scores.masked_fill(gold, float("-inf")).argsort(dim=1, descending=True, stable=True)
    available = (~gold).sum(dim=1)
    picked = []
    for qi in range(len(scores)):
        window = order[qi, first - 1 : min(last, int(available[qi]))]
        if len(window) < count:
            raise EmbedtuneError(
                f"train.hard_negatives={count}, but a question has only {len(window)} other "
                f"chunks in ranks {first}..{last} of the training corpus: lower "
                "train.hard_negatives or train.hard_negative_ranks"
            )
        chosen = torch.randperm(len(window), generator=generator)[:count].sort().values
        picked.append(window[chosen])
    return torch.stack(picked) if picked else torch.zeros(0, count, dtype=torch.long)


def training_columns(
    model,
    dataset: dict,
    train_ids: Sequence[str],
    held_chunks: Collection[str],
    cfg,
    embed: EmbedConfig,
    seed: int,
) -> dict[str, list[str]]:
    """Columns anchor, positive[, negative_1..n] of prefixed texts, one row per (question, chunk).

    Hard negatives are mined with `model` (the base model, before training) among the training
    chunks that are not held out; a question's own chunks, and chunks with the same text, never
    are its negatives.
    """
    relevant, corpus, queries = dataset["relevant_docs"], dataset["corpus"], dataset["queries"]
    pairs = [(qid, cid) for qid in train_ids for cid in relevant[qid]]
    columns = {
        "anchor": [embed.query_prefix + queries[qid] for qid, _ in pairs],
        "positive": [embed.document_prefix + corpus[cid] for _, cid in pairs],
    }
    if cfg.hard_negatives == 0:
        return columns
    texts = list(dict.fromkeys(corpus[c] for c in corpus if c not in held_chunks))
    text_col = {t: i for i, t in enumerate(texts)}
    gold = torch.zeros(len(train_ids), len(texts), dtype=torch.bool)
    for qi, qid in enumerate(train_ids):
        for cid in relevant[qid]:
            if corpus[cid] in text_col:
                gold[qi, text_col[corpus[cid]]] = True
    question_texts = [queries[q] for q in train_ids]
    q_emb = embed_texts(model, question_texts, embed.query_prefix, embed.batch_size)
    d_emb = embed_texts(model, texts, embed.document_prefix, embed.batch_size)
    negatives = rank_window_negatives(
        q_emb @ d_emb.T,
        gold,
        cfg.hard_negative_ranks,
        cfg.hard_negatives,
        torch.Generator().manual_seed(seed),
    )
    query_row = {qid: i for i, qid in enumerate(train_ids)}
    for n in range(cfg.hard_negatives):
        columns[f"negative_{n + 1}"] = [
            embed.document_prefix + texts[negatives[query_row[qid], n]] for qid, _ in pairs
        ]
    return columns
