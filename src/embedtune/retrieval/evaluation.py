"""Base vs tuned retrieval on one split or benchmark: per-query metrics of both models and,
given `retrieve` settings, of BM25 and every fusion candidate too.

Used by the `select` and `eval` stages, `embedtune search` and `bench/bench_eval.py`; ranking and
metrics come from this package, so every figure is computed one way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from embedtune import progress
from embedtune.config import RetrieveConfig
from embedtune.embeddings import SplitEmbeddings
from embedtune.errors import EmbedtuneError
from embedtune.retrieval.bootstrap import paired_bootstrap
from embedtune.retrieval.metrics import query_metrics, summarize
from embedtune.retrieval.ranking import Qrels, Ranked, binary_qrels, rank_scored_together
from embedtune.retrieval.retrievers import (
    Candidate,
    RetrievalInputs,
    candidates,
    dense_candidates,
)
from embedtune.retrieval.tuned import TunedModel

MODELS = ("base", "tuned")
MetricSpec = Mapping[str, Sequence[int]]  # metric name -> cut-offs


@dataclass(frozen=True)
class SplitResult:
    """Per-query metric values and best gold ranks of every retriever on one split."""

    query_ids: list[str]
    per_query: dict[str, dict[str, np.ndarray]]  # retriever -> metric -> (queries,) values
    ranked: dict[str, Ranked]  # retriever -> where each query's relevant chunks landed

    @property
    def best(self) -> dict[str, np.ndarray]:
        """Model -> (queries,) best gold rank, 0 for a query without a relevant chunk."""
        return {model: self.ranked[model].best for model in MODELS}

    @property
    def metrics(self) -> dict[str, dict]:
        """The two dense models' summaries (today's keys of eval.json)."""
        return {model: summarize(self.per_query[model]) for model in MODELS}

    def figures(self, shipped: str | None, resamples: int, confidence: float, seed: int) -> dict:
        """What eval writes for one split: base and tuned; with more candidates, also
        "retrievers" {name: summary}, "delta_retrievers" {name: interval vs base}, "shipped"
        {"retriever": name, **summary} and "delta_shipped" (shipped - base)."""
        out: dict = dict(self.metrics)
        if set(self.per_query) == set(MODELS):
            return out
        base = self.per_query["base"]

        def delta(name: str) -> dict:
            return paired_bootstrap(base, self.per_query[name], resamples, confidence, seed)

        out["retrievers"] = {name: summarize(values) for name, values in self.per_query.items()}
        out["delta_retrievers"] = {name: delta(name) for name in self.per_query if name != "base"}
        if shipped is not None:
            out["shipped"] = {"retriever": shipped, **out["retrievers"][shipped]}
            out["delta_shipped"] = delta(shipped)
        return out


def compare(
    query_ids: list[str],
    corpus_ids: list[str],
    qrels: Qrels,
    inputs: RetrievalInputs,
    spec: MetricSpec,
    retrievers: list[Candidate] | None = None,
) -> SplitResult:
    """Rank and score the corpus with each retriever (default: the two dense models) against
    the qrels."""
    for model, pair in inputs.dense.items():
        for side, x in zip(("query", "chunk"), pair, strict=True):
            if not torch.isfinite(x).all():  # NaN scores would compare as never ranked higher
                raise EmbedtuneError(f"the {model} model gave non-finite {side} embeddings")
    found = retrievers or dense_candidates()
    names = [c.name for c in found]
    scorer = inputs.block_scorer(found)

    def reporting(lo: int, hi: int):
        yield from scorer(lo, hi)
        progress.advance(hi - lo, "questions")  # to the stage's task, if it keeps one

    # every candidate ranks a block before the next block: they share its dense and BM25 scores
    ranked = rank_scored_together(names, reporting, query_ids, corpus_ids, qrels)
    per_query = {name: query_metrics(ranked[name], spec) for name in names}
    return SplitResult(list(query_ids), per_query, ranked)


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(x).detach().float().cpu()


def with_tuned(tuned: TunedModel, queries, corpus, base_q, base_c) -> dict:
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
    retrieve: RetrieveConfig | None = None,
) -> SplitResult:
    """Base vs tuned (and, with `retrieve`, every candidate retriever) on one split of our own
    QA data (binary relevance).

    Args:
        emb: base-model embeddings of the split's queries and chunks (`embed` stage).
        dataset: the split's `EmbeddingQAFinetuneDataset` dict (texts and `relevant_docs`).
        tuned: the tuned model; it gets texts and base embeddings, returns its embeddings.
        spec: metric name -> cut-offs.
        query_ids: score only these queries (still against the whole corpus of the split).
        retrieve: BM25 and fusion settings; None scores the two dense models only.
    """
    if query_ids is not None and list(query_ids) != emb.query_ids:  # a subset: copy its rows
        row = {qid: i for i, qid in enumerate(emb.query_ids)}
        rows = [row[q] for q in query_ids]
        emb = SplitEmbeddings(list(query_ids), emb.queries[rows], emb.corpus_ids, emb.corpus)
    if not emb.query_ids:
        raise EmbedtuneError("split has no queries: check metrics/synth.json")
    queries = [dataset["queries"][qid] for qid in emb.query_ids]
    corpus = [dataset["corpus"][cid] for cid in emb.corpus_ids]
    qrels = binary_qrels(emb.query_ids, dataset["relevant_docs"])
    embeddings = with_tuned(tuned, queries, corpus, emb.queries, emb.corpus)
    inputs = RetrievalInputs.build(embeddings, queries, corpus, retrieve and retrieve.bm25)
    return compare(emb.query_ids, emb.corpus_ids, qrels, inputs, spec, candidates(retrieve))
