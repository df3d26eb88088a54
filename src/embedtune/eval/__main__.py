"""Stage `eval`: base vs tuned retrieval on the held-out validation documents (and benchmarks).

Usage: python -m embedtune.eval   (reads params.yaml; run by `dvc repro`)

Ranks every chunk of a split for every query of it with each candidate retriever: by cosine
similarity with the frozen base model and with the tuned model (`embedtune.train.methods`), by BM25,
and by each fusion `retrieve` lists; the one `select` shipped (models/retriever) is also
reported as "shipped". Writes:

- metrics/eval.json: {"base": {...}, "tuned": {...}} on the validation split: every metric of
  `eval.metrics` at its cut-offs, and the number of queries; and every candidate under
  "retrievers" (tuned - base style intervals against the dense base under "delta_retrievers"),
  the shipped one under "shipped" {"retriever": name, ...} with its interval "delta_shipped";
- metrics/eval_delta.json: tuned - base for every metric, with a paired bootstrap interval;
- metrics/eval_train.json: {"train": {"base": ..., "tuned": ..., "retrievers": ...}}, the same
  on the training split (a large train/validation gap is overfitting): at most
  `eval.train_questions` of its questions, a seeded sample, over the whole training corpus;
- metrics/eval_queries.csv: per query, the rank of its best-ranked gold chunk for both models;
- metrics/plots/hit_rate_vs_k.csv: hit rate at k = 1..max(eval.metrics.hit_rate), both models;
- metrics/benchmarks.json: the same on each `eval.benchmarks` folder (BEIR layout), with
  tuned - base and its paired bootstrap interval under "delta"; their texts are embedded once
  per model: the rows are kept in `<cache>/benchmarks/` (see `benchmark_blocks`);
- metrics/examples.md: the validation questions the shipped retriever moved most, up and down
  (`embedtune.eval.examples`);
- metrics/eval_seen.json: the same on the seen-corpus questions (training-split questions that
  `mine` set aside: neither training nor selection saw them) over the whole training corpus:
  new questions about documents the model was tuned on.

Ranking, ties (they count against the model) and metrics: `embedtune.retrieval`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from embedtune import io, progress
from embedtune.config import EmbedConfig, EvalConfig, RetrieveConfig, load_params
from embedtune.embeddings import BlockStore, encoder_key, load_embeddings, load_encoder
from embedtune.eval import tracking
from embedtune.eval.examples import compared_retriever, examples_markdown
from embedtune.eval.report import print_benchmarks, print_retrievers, print_table, print_train_split
from embedtune.eval.tables import QUERY_COLUMNS, hit_rate_curve, query_rows
from embedtune.mine.mined import load_mined
from embedtune.retrieval.beir import Benchmark, load_benchmark
from embedtune.retrieval.bootstrap import paired_bootstrap
from embedtune.retrieval.evaluation import (
    MODELS,
    MetricSpec,
    SplitResult,
    compare,
    evaluate,
    with_tuned,
)
from embedtune.retrieval.metrics import METRICS
from embedtune.retrieval.retrievers import RetrievalInputs, candidates, shipped_retriever
from embedtune.retrieval.tuned import TunedModel
from embedtune.sampling import at_most
from embedtune.stage import run_stage
from embedtune.train.methods.base import load_tuned

PARAMS = {"seed": int, "embed": EmbedConfig, "retrieve": RetrieveConfig, "eval": EvalConfig}


class Figures:
    """What every split and benchmark reports, with the same settings."""

    def __init__(self, cfg: EvalConfig, retrieve: RetrieveConfig, shipped: str, seed: int):
        self.cfg, self.retrieve, self.shipped, self.seed = cfg, retrieve, shipped, seed

    def of(self, result, with_delta: bool = False) -> dict:
        """Base, tuned, every retriever and the shipped one, with intervals against base;
        with `with_delta`, tuned - base under "delta"."""
        cfg = self.cfg
        figures = result.figures(self.shipped, cfg.bootstrap, cfg.confidence, self.seed)
        if with_delta:
            figures["delta"] = self.delta(result)
        return figures

    def delta(self, result) -> dict:
        base, tuned = result.per_query["base"], result.per_query["tuned"]
        return paired_bootstrap(base, tuned, self.cfg.bootstrap, self.cfg.confidence, self.seed)


def evaluate_benchmark(
    bench: Benchmark,
    base: BlockStore,
    tuned: TunedModel,
    embed: EmbedConfig,
    spec: MetricSpec,
    retrieve: RetrieveConfig | None = None,
) -> SplitResult:
    """Every retriever on a BEIR test set: `base` (the base model's blocks, see
    `benchmark_blocks`) embeds it here, with the embed prefixes."""
    query_ids, corpus_ids = list(bench.queries), list(bench.corpus)
    queries = [bench.queries[i] for i in query_ids]
    corpus = [bench.corpus[i] for i in corpus_ids]
    base_q = base.embed(queries, embed.query_prefix)
    base_c = base.embed(corpus, embed.document_prefix)
    embeddings = with_tuned(tuned, queries, corpus, base_q, base_c)
    inputs = RetrievalInputs.build(embeddings, queries, corpus, retrieve and retrieve.bm25)
    return compare(query_ids, corpus_ids, bench.qrels, inputs, spec, candidates(retrieve))


def benchmark_cache() -> Path:
    """Where benchmark rows are kept: shared by every checkout, never removed by a stage."""
    return io.cache_root() / "benchmarks"


def benchmark_blocks(encoder, embed: EmbedConfig, tuned: TunedModel):
    """The base model's `BlockStore` and the tuned model, both keeping the rows they encode in
    `benchmark_cache()`: the base model's under a key of `embed.model`, `embed.dtype`, the
    device kind and dtype; a tuned model that encodes texts itself (`cached`) under a key of
    its files' content. A cache that cannot be written costs one warning line: rows already
    there are read, new ones are encoded and not kept (the figures are the same)."""
    root = benchmark_cache()
    why = io.unwritable(root)
    if why is not None:
        print(
            f"embedtune: warning: {root} cannot be written ({why}): benchmark embeddings are "
            f"not kept (set {io.CACHE_ENV} to a writable folder to keep them)",
            file=sys.stderr,
        )
    read_only = why is not None
    folder = root / encoder_key(encoder, "base", embed.model, embed.dtype)
    base = BlockStore(encoder, embed.batch_size, folder, read_only=read_only)
    cached = getattr(tuned, "cached", None)  # None: it only maps the base rows
    return base, (tuned if cached is None else cached(root, read_only))


def note_unwatched(folders: list[str]) -> None:
    """A benchmark outside benchmarks/ (which `eval` depends on) is scored, but DVC does not see
    it change: say what to run after editing it."""
    watched = io.BENCHMARKS_DIR.resolve()
    for folder in folders:
        if watched not in Path(folder).resolve().parents:
            print(
                f"note: {folder} is outside {io.BENCHMARKS_DIR}/, so DVC does not watch it: "
                "after editing it, run `dvc repro -f --downstream eval`"
            )


def benchmark_metrics(figures: Figures, embed: EmbedConfig, tuned) -> dict[str, dict]:
    """Every retriever's figures on each benchmark, with intervals against the dense base."""
    cfg = figures.cfg
    if not cfg.benchmarks:
        return {}
    sets = {Path(b).name: load_benchmark(b) for b in cfg.benchmarks}  # fail before encoding
    note_unwatched(cfg.benchmarks)
    base, tuned = benchmark_blocks(load_encoder(embed), embed, tuned)
    metrics = {}
    for name, bench in sets.items():
        embedding = f"eval {name}: embedding"  # the base model's texts, the tuned one's if any
        with (
            progress.task(f"eval {name}", len(bench.queries), "questions"),
            progress.task(embedding, None, "texts"),
        ):
            result = evaluate_benchmark(bench, base, tuned, embed, cfg.metrics, figures.retrieve)
        metrics[name] = figures.of(result, True)
    stores = [base, *filter(None, [getattr(tuned, "blocks", None)])]
    reused, encoded = sum(s.reused for s in stores), sum(s.encoded for s in stores)
    print(f"benchmarks: {reused} blocks of rows read from {benchmark_cache()}, {encoded} encoded")
    return metrics


def seen_corpus_metrics(figures: Figures, emb, dataset: dict, tuned, query_ids: list[str]) -> dict:
    """Every retriever's figures on the seen-corpus questions over the whole training corpus,
    with tuned - base under "delta" ({} without such questions)."""
    if not query_ids:
        return {}
    cfg = figures.cfg
    with progress.task("eval seen corpus", len(query_ids), "questions"):
        result = evaluate(emb, dataset, tuned, cfg.metrics, query_ids, figures.retrieve)
    return figures.of(result, with_delta=True)


def write_examples(result: SplitResult, dataset: dict, shipped: str) -> None:
    names = {"base", compared_retriever(shipped)}
    best = {name: result.ranked[name].best for name in names}
    page = examples_markdown(result.query_ids, best, dataset, shipped)
    with io.atomic_path(io.METRICS_DIR / "examples.md") as tmp:
        tmp.write_text(page, encoding="utf-8")


def main() -> None:
    params = load_params(PARAMS)
    cfg: EvalConfig = params.eval
    for name in cfg.metrics:  # an unknown metric stops the stage before any model loads
        METRICS.get(name)
    figures = Figures(cfg, params.retrieve, shipped_retriever(params.retrieve), params.seed)
    tuned = load_tuned(io.TUNED_DIR, params.embed)
    results, datasets, embeddings = {}, {}, {}
    for split in ("validation", "train"):
        datasets[split] = io.load_qa(split)
        embeddings[split] = load_embeddings(io.EMBEDDINGS_DIR / f"{split}.safetensors")
    scored = {
        "validation": embeddings["validation"].query_ids,
        "train": at_most(embeddings["train"].query_ids, cfg.train_questions, params.seed, "eval"),
    }
    for split, query_ids in scored.items():
        with progress.task(f"eval {split}", len(query_ids), "questions"):
            results[split] = evaluate(
                embeddings[split], datasets[split], tuned, cfg.metrics, query_ids, params.retrieve
            )
    seen = seen_corpus_metrics(
        figures, embeddings["train"], datasets["train"], tuned, load_mined().seen_corpus
    )
    validation = results["validation"]
    delta = figures.delta(validation)
    benchmarks = benchmark_metrics(figures, params.embed, tuned)
    train = figures.of(results["train"])
    validation_figures = figures.of(validation)  # tuned - base goes to eval_delta.json
    io.write_json(io.METRICS_DIR / "eval.json", validation_figures)
    io.write_json(io.METRICS_DIR / "eval_delta.json", delta)
    io.write_json(io.METRICS_DIR / "eval_train.json", {"train": train})
    io.write_json(io.METRICS_DIR / "benchmarks.json", benchmarks)
    io.write_json(io.METRICS_DIR / "eval_seen.json", seen)
    rows = [r for s in ("validation", "train") for r in query_rows(s, results[s], datasets[s])]
    io.write_csv(io.METRICS_DIR / "eval_queries.csv", rows, QUERY_COLUMNS)
    write_examples(validation, datasets["validation"], figures.shipped)
    curve = hit_rate_curve(validation, max(cfg.metrics.get("hit_rate", [10])))
    io.write_csv(io.METRICS_DIR / "plots" / "hit_rate_vs_k.csv", curve, ["k", *MODELS])
    print_table(validation.metrics, delta)
    print_retrievers(validation_figures, "validation split")
    if seen:
        title = "seen corpus: {queries} new questions about the training documents"
        print_table(seen, seen["delta"], title)
        print_retrievers(seen, "seen corpus")
    print_train_split(results["train"].metrics)
    print_retrievers(train, "train split")
    print_benchmarks(benchmarks)
    for name, bench in benchmarks.items():
        print_retrievers(bench, f"benchmark {name}")
    tracking.log_eval(tuned.method, validation.metrics, delta)


if __name__ == "__main__":
    run_stage("eval", main)
