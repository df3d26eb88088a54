"""Training a small network on cached base query embeddings (the adapter methods' loop).

Loss: multiple negatives ranking, each question's chunk against the batch's other distinct
chunks; no chunk is twice in a batch. After every epoch the held-out questions' MRR@10 picks
the weights that are kept (epoch 0, the untrained adapter, included).
"""

from __future__ import annotations

import math
from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import nn

from embedtune.embeddings import SplitEmbeddings
from embedtune.errors import EmbedtuneError
from embedtune.methods.base import TrainingLog
from embedtune.methods.heldout import HELDOUT_NAME, heldout_score, heldout_split


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
) -> torch.Tensor:
    """Cross-entropy of each query's positive against the batch's other distinct chunks."""
    candidates, target = torch.unique(doc_rows, return_inverse=True)
    q = F.normalize(adapter(queries), dim=-1)
    scores = scale * q @ corpus[candidates].T
    return F.cross_entropy(scores, target)


def make_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    optimizers = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
    return optimizers[name](params, lr=lr, weight_decay=weight_decay)


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _run_epoch(adapter, optimizer, emb, q_rows, d_rows, batches, scale, step, log) -> int:
    """One pass over the batches; returns the optimiser step count after it."""
    for batch in batches:
        if len(batch) < 2:
            continue  # one chunk alone has no negative to rank against
        loss = ranking_loss(adapter, emb.queries[q_rows[batch]], emb.corpus, d_rows[batch], scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        log.step(step, loss.item())
    return step


def train_adapter(
    adapter: nn.Module, emb: SplitEmbeddings, dataset: dict, cfg, seed: int, log: TrainingLog
) -> nn.Module:
    """Train `adapter` on cached embeddings; keep the best held-out epoch.

    Args:
        adapter: the untrained adapter (the identity map, so epoch 0 is the base model).
        emb: base-model embeddings of the training split.
        dataset: the split's `EmbeddingQAFinetuneDataset` dict (for `relevant_docs`).
        cfg: an adapter method's config (optimizer, lr, epochs, batch size, scale, held-out
            fraction, patience).
        seed: seeds the held-out slice and the batches.
        log: receives the loss per step and the held-out MRR@10 per epoch.

    Returns:
        The adapter with the weights of the best epoch (epoch 0 included); the last epoch's
        when nothing is held out.
    """
    relevant = dataset["relevant_docs"]
    train_ids, held_ids = heldout_split(dataset, cfg.holdout_fraction, seed)
    q_rows, d_rows = training_pairs(emb, dataset, train_ids)
    if len(q_rows) < 2:
        raise EmbedtuneError(
            f"training split has {len(q_rows)} labelled queries, need at least 2 "
            "(more documents in data.train, a smaller train.holdout_fraction, "
            "or check metrics/synth.json)"
        )
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(adapter.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay)
    row = {qid: i for i, qid in enumerate(emb.query_ids)}
    held_queries = emb.queries[[row[q] for q in held_ids]]

    def held_out() -> float:
        with torch.no_grad():
            queries = adapter(held_queries)
        return heldout_score(queries, emb.corpus, held_ids, emb.corpus_ids, relevant)

    step, stale, best_state, best = 0, 0, None, float("-inf")
    if held_ids:
        best, best_state = held_out(), _snapshot(adapter)
        log.epoch(0, 0, {HELDOUT_NAME: best})
    for epoch in range(1, cfg.epochs + 1):
        batches = no_duplicate_batches(d_rows, cfg.batch_size, generator)
        step = _run_epoch(adapter, optimizer, emb, q_rows, d_rows, batches, cfg.scale, step, log)
        if not held_ids:
            continue
        score = held_out()
        log.epoch(epoch, step, {HELDOUT_NAME: score})
        if score > best:
            best, stale, best_state = score, 0, _snapshot(adapter)
        else:
            stale += 1
            if cfg.patience and stale >= cfg.patience:
                break
    if best_state is not None:
        adapter.load_state_dict(best_state)
    return adapter.eval()
