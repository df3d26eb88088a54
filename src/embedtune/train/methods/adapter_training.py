"""Training a small network on cached base query embeddings (the adapter methods' loop).

Loss: multiple negatives ranking, each question's chunk against the batch's other distinct
chunks and the batch's mined hard negatives; no chunk is twice in a batch as a positive; an
optional penalty keeps the adapted queries near the base ones. After every epoch the held-out
questions' MRR@10 scores the weights; the best epoch is kept only if it beats the untrained
adapter beyond the held-out slice's noise (`embedtune.retrieval.selection`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embedtune.embeddings import SplitEmbeddings
from embedtune.errors import EmbedtuneError
from embedtune.retrieval.selection import (
    HELDOUT_NAME,
    heldout_per_query,
    heldout_split,
    select_epoch,
)
from embedtune.train.methods.base import TrainingLog, check_loss, diverged


def training_pairs(
    emb: SplitEmbeddings, dataset: dict, query_ids: Collection[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (query, positive chunk) for every labelled query of the split (or of
    `query_ids` only)."""
    corpus_row = {cid: i for i, cid in enumerate(emb.corpus_ids)}
    keep = None if query_ids is None else set(query_ids)
    q_rows, d_rows = [], []
    for qi, qid in enumerate(emb.query_ids):
        if keep is not None and qid not in keep:
            continue
        for cid in dataset["relevant_docs"].get(qid, []):
            q_rows.append(qi)
            d_rows.append(corpus_row[cid])
    return torch.tensor(q_rows, dtype=torch.long), torch.tensor(d_rows, dtype=torch.long)


def no_duplicate_batches(
    doc_rows: torch.Tensor, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Shuffled batches of positions into `doc_rows`, no chunk twice in a batch, each position once.

    Uses B = max(ceil(n / batch_size), most questions of one chunk) batches: the positions are
    grouped by chunk (chunks in random order, questions shuffled within a chunk) and dealt out in
    turn, position i to batch i mod B. A chunk's questions are consecutive and at most B, so they
    land in different batches; batch sizes differ by at most one and never exceed `batch_size`.
    """
    n = len(doc_rows)
    if n == 0:
        return []
    chunks, counts = torch.unique(doc_rows, return_counts=True)
    num_batches = max(math.ceil(n / batch_size), int(counts.max()))
    by_chunk = {int(c): (doc_rows == c).nonzero().flatten() for c in chunks}
    sequence = []
    for ci in torch.randperm(len(chunks), generator=generator).tolist():
        positions = by_chunk[int(chunks[ci])]
        sequence.append(positions[torch.randperm(len(positions), generator=generator)])
    dealt = torch.cat(sequence)
    batches = [dealt[j::num_batches] for j in range(num_batches)]
    order = torch.randperm(num_batches, generator=generator).tolist()
    return [batches[j][torch.randperm(len(batches[j]), generator=generator)] for j in order]


def ranking_loss(
    adapter: nn.Module,
    queries: torch.Tensor,
    corpus: torch.Tensor,
    doc_rows: torch.Tensor,
    scale: float,
    negative_rows: torch.Tensor | None = None,
    identity_weight: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy of each query's positive against the batch's other distinct chunks and
    the batch's hard negatives (`negative_rows`, -1 where a question has fewer), plus
    `identity_weight` times the mean squared distance of the adapted queries from the base ones
    (which keeps the adapter near the identity, the base model)."""
    rows = doc_rows
    if negative_rows is not None:
        rows = torch.cat([doc_rows, negative_rows[negative_rows >= 0]])
    candidates, inverse = torch.unique(rows, return_inverse=True)
    mapped = adapter(queries)
    scores = scale * F.normalize(mapped, dim=-1) @ corpus[candidates].T
    loss = F.cross_entropy(scores, inverse[: len(doc_rows)])
    if identity_weight:
        loss = loss + identity_weight * (mapped - queries).pow(2).sum(dim=1).mean()
    return loss


def negative_matrix(
    emb: SplitEmbeddings, q_rows: torch.Tensor, negatives: Callable[[str], list[str]], count: int
) -> torch.Tensor | None:
    """[pairs, count] corpus rows of each pair's first `count` mined negatives (-1: none)."""
    if not count:
        return None
    corpus_row = {cid: i for i, cid in enumerate(emb.corpus_ids)}
    matrix = torch.full((len(q_rows), count), -1, dtype=torch.long)
    for i, qi in enumerate(q_rows.tolist()):
        found = [corpus_row[c] for c in negatives(emb.query_ids[qi])[:count]]
        matrix[i, : len(found)] = torch.tensor(found, dtype=torch.long)
    return matrix


def positions(ids: list[str], wanted: list[str]) -> list[int]:
    """Where each of `wanted` is in `ids`, through a dict built once (not a search per id)."""
    row = {x: i for i, x in enumerate(ids)}
    return [row[x] for x in wanted]


def make_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    optimizers = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
    return optimizers[name](params, lr=lr, weight_decay=weight_decay)


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@dataclass
class Batches:
    """The training pairs (query row, positive row, hard-negative rows) of an adapter."""

    q_rows: torch.Tensor
    d_rows: torch.Tensor
    negatives: torch.Tensor | None


def _training_batches(emb, dataset, train_ids, negatives, count: int) -> Batches:
    q_rows, d_rows = training_pairs(emb, dataset, train_ids)
    if len(q_rows) < 2:
        raise EmbedtuneError(
            f"training split has {len(q_rows)} labelled queries, need at least 2 "
            "(more documents in data.train, a smaller train.holdout_fraction, "
            "or check metrics/synth.json and metrics/mine.json)"
        )
    return Batches(q_rows, d_rows, negative_matrix(emb, q_rows, negatives, count))


def _run_epoch(adapter, optimizer, emb, pairs: Batches, batches, cfg, step, log) -> int:
    """One pass over the batches; returns the optimiser step count after it."""
    for batch in batches:
        if len(batch) < 2:
            continue  # one chunk alone has no negative to rank against
        loss = ranking_loss(
            adapter,
            emb.queries[pairs.q_rows[batch]],
            emb.corpus,
            pairs.d_rows[batch],
            cfg.scale,
            None if pairs.negatives is None else pairs.negatives[batch],
            cfg.identity_weight,
        )
        step += 1
        value = loss.item()
        check_loss(value, step, cfg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.step(step, value)
    if not all(bool(torch.isfinite(p).all()) for p in adapter.parameters()):
        raise diverged(cfg, step, "non-finite weights")
    return step


def train_adapter(
    adapter: nn.Module,
    emb: SplitEmbeddings,
    dataset: dict,
    cfg,
    seed: int,
    log: TrainingLog,
    split: tuple[list[str], list[str]] | None = None,
    negatives: Callable[[str], list[str]] = lambda qid: [],
) -> nn.Module:
    """Train `adapter` on cached embeddings; keep the best held-out epoch if it beats untrained.

    Args:
        adapter: the untrained adapter (the identity map, so epoch 0 is the base model).
        emb, dataset: base-model embeddings and `EmbeddingQAFinetuneDataset` dict of the split.
        cfg: an adapter method's config.
        seed: seeds the held-out slice, the batches and the selection's bootstrap.
        log: receives the loss per step, the held-out MRR@10 per epoch and the selection.
        split: (training, held-out) question ids; by default the held-out slice of the split.
        negatives: a training question's mined hard negatives (chunk ids, hardest first).

    Returns: the adapter with the best trained epoch's weights if their held-out gain over the
    untrained adapter is clear of noise (`selection.beats_base`), else the untrained weights;
    the last epoch's when nothing is held out.
    """
    relevant = dataset["relevant_docs"]
    train_ids, held_ids = split or heldout_split(
        dataset, cfg.holdout_fraction, seed, cfg.holdout_min_questions
    )
    pairs = _training_batches(emb, dataset, train_ids, negatives, cfg.hard_negatives)
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(adapter.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay)
    held_queries = emb.queries[positions(emb.query_ids, held_ids)]

    def held_out() -> np.ndarray:
        with torch.no_grad():
            queries = adapter(held_queries)
        return heldout_per_query(queries, emb.corpus, held_ids, emb.corpus_ids, relevant)

    untrained = held_out() if held_ids else None
    if held_ids:
        log.epoch(0, 0, {HELDOUT_NAME: float(untrained.mean())})
    untrained_state, step, stale, best = _snapshot(adapter), 0, 0, None  # best trained epoch
    record = untrained.mean() if held_ids else None  # patience counts from the untrained score
    for epoch in range(1, cfg.epochs + 1):
        batches = no_duplicate_batches(pairs.d_rows, cfg.batch_size, generator)
        step = _run_epoch(adapter, optimizer, emb, pairs, batches, cfg, step, log)
        if not held_ids:
            continue
        values = held_out()
        log.epoch(epoch, step, {HELDOUT_NAME: float(values.mean())})
        if best is None or values.mean() > best[1].mean():
            best = (epoch, values, _snapshot(adapter))
        stale = 0 if values.mean() > record else stale + 1
        record = max(record, values.mean())
        if cfg.patience and stale >= cfg.patience:
            break
    if best is not None:
        _keep_selected(adapter, (0, untrained, untrained_state), best, cfg, seed, log)
    return adapter.eval()


def _keep_selected(adapter: nn.Module, untrained: tuple, best: tuple, cfg, seed, log) -> None:
    """Load the best epoch's weights if they beat the untrained ones beyond noise, else those."""
    kept = select_epoch(untrained[1], best[0], best[1], cfg, seed, log)
    adapter.load_state_dict((best if kept else untrained)[2])
