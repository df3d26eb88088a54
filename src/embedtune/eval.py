"""Stage `eval`: base vs tuned retrieval on the held-out validation documents.

Usage: python -m embedtune.eval   (reads params.yaml; run by `dvc repro`)

Ranks every validation chunk for every validation query by cosine similarity, for the frozen
base model and for the base model with the trained adapter, and writes hit rate@k and MRR@k
to metrics/eval.json as {"base": {...}, "tuned": {...}}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from embedtune import io
from embedtune.config import load_params
from embedtune.embed import SplitEmbeddings, load_dataset, load_embeddings
from embedtune.errors import EmbedtuneError, run_stage
from embedtune.tuned import load_tuned


def gold_ranks(
    queries: torch.Tensor, emb: SplitEmbeddings, relevant: dict[str, list[str]]
) -> torch.Tensor:
    """1-based rank of the best-ranked relevant chunk for each query (cosine similarity)."""
    scores = F.normalize(queries, dim=-1) @ F.normalize(emb.corpus, dim=-1).T
    corpus_row = {cid: i for i, cid in enumerate(emb.corpus_ids)}
    gold = torch.zeros_like(scores, dtype=torch.bool)
    for qi, qid in enumerate(emb.query_ids):
        for cid in relevant.get(qid, []):
            gold[qi, corpus_row[cid]] = True
    best_gold = scores.masked_fill(~gold, float("-inf")).max(dim=1).values
    return (scores > best_gold.unsqueeze(1)).sum(dim=1) + 1


def retrieval_metrics(ranks: torch.Tensor, k: int) -> dict[str, float]:
    """Hit rate@k and MRR@k (reciprocal rank, zero beyond k) from gold ranks."""
    hits = ranks <= k
    reciprocal = torch.where(hits, 1.0 / ranks.double(), torch.zeros((), dtype=torch.float64))
    return {
        f"hit_rate@{k}": round(hits.double().mean().item(), 4),
        f"mrr@{k}": round(reciprocal.mean().item(), 4),
        "queries": int(len(ranks)),
    }


def evaluate(emb: SplitEmbeddings, relevant: dict, adapter, k: int) -> dict[str, dict]:
    """Metrics for the base model and for the adapter-tuned model on one split."""
    if not emb.query_ids:
        raise EmbedtuneError("validation split has no queries: check metrics/synth.json")
    with torch.no_grad():
        tuned_queries = adapter(emb.queries)
    return {
        "base": retrieval_metrics(gold_ranks(emb.queries, emb, relevant), k),
        "tuned": retrieval_metrics(gold_ranks(tuned_queries, emb, relevant), k),
    }


def main() -> None:
    from embedtune.report import print_table

    params = load_params()
    emb = load_embeddings(io.EMBEDDINGS_DIR / "validation.safetensors")
    relevant = load_dataset("validation")["relevant_docs"]
    metrics = evaluate(emb, relevant, load_tuned(io.TUNED_DIR).adapter, max(params.eval.k))
    io.write_json(io.METRICS_DIR / "eval.json", metrics)
    print_table(metrics)


if __name__ == "__main__":
    run_stage("eval", main)
