"""Base vs tuned retrieval on one split or benchmark: per-query metrics of both models.

Used by the `eval` stage and by `bench/bench_eval.py`; ranking and metrics come from
`embedtune.retrieval`, so every figure is computed one way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from embedtune.config import EmbedConfig
from embedtune.embeddings import SplitEmbeddings, embed_texts
from embedtune.errors import EmbedtuneError
from embedtune.methods.base import TunedModel
from embedtune.retrieval.beir import Benchmark
from embedtune.retrieval.metrics import metric_at, query_metrics, summarize
from embedtune.retrieval.ranking import Qrels, Ranked, binary_qrels, rank

MODELS = ("base", "tuned")
QUERY_COLUMNS = ["split", "query_id", "query", "gold_ids", "base_rank", "tuned_rank"]
MetricSpec = Mapping[str, Sequence[int]]  # metric name -> cut-offs


@dataclass(frozen=True)
class SplitResult:
    """Per-query metric values and best gold ranks of both models on one split."""

    query_ids: list[str]
    per_query: dict[str, dict[str, np.ndarray]]  # model -> metric -> (queries,) values
    ranked: dict[str, Ranked]  # model -> where each query's relevant chunks landed

    @property
    def best(self) -> dict[str, np.ndarray]:
        """Model -> (queries,) best gold rank, 0 for a query without a relevant chunk."""
        return {model: ranked.best for model, ranked in self.ranked.items()}

    @property
    def metrics(self) -> dict[str, dict]:
        return {model: summarize(self.per_query[model]) for model in MODELS}


def compare(
    query_ids: list[str],
    corpus_ids: list[str],
    qrels: Qrels,
    embeddings: dict[str, tuple[torch.Tensor, torch.Tensor]],
    spec: MetricSpec,
) -> SplitResult:
    """Rank and score the (queries, corpus) embeddings of each model against the qrels."""
    per_query, ranked = {}, {}
    for model in MODELS:
        for side, x in zip(("query", "chunk"), embeddings[model], strict=True):
            if not torch.isfinite(x).all():  # NaN scores would compare as never ranked higher
                raise EmbedtuneError(f"the {model} model gave non-finite {side} embeddings")
        ranked[model] = rank(*embeddings[model], query_ids, corpus_ids, qrels)
        per_query[model] = query_metrics(ranked[model], spec)
    return SplitResult(list(query_ids), per_query, ranked)


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(x).detach().float().cpu()


def _with_tuned(tuned: TunedModel, queries, corpus, base_q, base_c) -> dict:
    return {
        "base": (base_q, base_c),
        "tuned": (
            _as_tensor(tuned.encode_queries(queries, base_q)),
            _as_tensor(tuned.encode_corpus(corpus, base_c)),
        ),
    }


def evaluate(
    emb: SplitEmbeddings,
    dataset: dict,
    tuned: TunedModel,
    spec: MetricSpec,
    query_ids: Sequence[str] | None = None,
) -> SplitResult:
    """Base vs tuned on one split of our own QA data (binary relevance).

    Args:
        emb: base-model embeddings of the split's queries and chunks (`embed` stage).
        dataset: the split's `EmbeddingQAFinetuneDataset` dict (texts and `relevant_docs`).
        tuned: the tuned model; it gets texts and base embeddings, returns its embeddings.
        spec: metric name -> cut-offs.
        query_ids: score only these queries (still against the whole corpus of the split).
    """
    if query_ids is not None:
        row = {qid: i for i, qid in enumerate(emb.query_ids)}
        rows = [row[q] for q in query_ids]
        emb = SplitEmbeddings(list(query_ids), emb.queries[rows], emb.corpus_ids, emb.corpus)
    if not emb.query_ids:
        raise EmbedtuneError("split has no queries: check metrics/synth.json")
    queries = [dataset["queries"][qid] for qid in emb.query_ids]
    corpus = [dataset["corpus"][cid] for cid in emb.corpus_ids]
    qrels = binary_qrels(emb.query_ids, dataset["relevant_docs"])
    embeddings = _with_tuned(tuned, queries, corpus, emb.queries, emb.corpus)
    return compare(emb.query_ids, emb.corpus_ids, qrels, embeddings, spec)


def evaluate_benchmark(
    bench: Benchmark, encoder, tuned: TunedModel, embed: EmbedConfig, spec: MetricSpec
) -> SplitResult:
    """Base vs tuned on a BEIR test set: the base model embeds it here, with the embed prefixes."""
    query_ids, corpus_ids = list(bench.queries), list(bench.corpus)
    queries = [bench.queries[i] for i in query_ids]
    corpus = [bench.corpus[i] for i in corpus_ids]
    base_q = embed_texts(encoder, queries, embed.query_prefix, embed.batch_size)
    base_c = embed_texts(encoder, corpus, embed.document_prefix, embed.batch_size)
    embeddings = _with_tuned(tuned, queries, corpus, base_q, base_c)
    return compare(query_ids, corpus_ids, bench.qrels, embeddings, spec)


def query_rows(split: str, result: SplitResult, dataset: dict) -> list[dict]:
    """Rows of metrics/eval_queries.csv for one split (rank '' when a query has no gold chunk)."""
    best = result.best
    return [
        {
            "split": split,
            "query_id": qid,
            "query": dataset["queries"][qid],
            "gold_ids": " ".join(dataset["relevant_docs"].get(qid, [])),
            **{f"{model}_rank": int(best[model][i]) or "" for model in MODELS},
        }
        for i, qid in enumerate(result.query_ids)
    ]


def hit_rate_curve(result: SplitResult, max_k: int) -> list[dict]:
    """Rows {k, base, tuned}: hit rate at every k from 1 to `max_k`."""
    return [
        {"k": k, **{m: round(metric_at(result.ranked[m], "hit_rate", k), 4) for m in MODELS}}
        for k in range(1, max_k + 1)
    ]
