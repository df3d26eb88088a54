"""Stage `eval`: base vs tuned retrieval on the held-out validation documents (and benchmarks).

Usage: python -m embedtune.eval   (reads params.yaml; run by `dvc repro`)

Ranks every chunk of a split for every query of it by cosine similarity, once with the frozen
base model and once with the tuned model (`embedtune.methods`), and writes:

- metrics/eval.json: {"base": {...}, "tuned": {...}} on the validation split: every metric of
  `eval.metrics` at its cut-offs, and the number of queries;
- metrics/eval_delta.json: tuned - base for every metric, with a paired bootstrap interval;
- metrics/eval_train.json: {"train": {"base": ..., "tuned": ...}}, the same on the training split
  (a large train/validation gap is overfitting);
- metrics/eval_queries.csv: per query, the rank of its best-ranked gold chunk for both models;
- metrics/plots/hit_rate_vs_k.csv: hit rate at k = 1..max(eval.metrics.hit_rate), both models;
- metrics/benchmarks.json: the same metrics on each `eval.benchmarks` folder (BEIR layout),
  with tuned - base and its paired bootstrap interval under "delta";
- metrics/eval_seen.json: the same on the seen-corpus questions (training-split questions that
  `mine` set aside: neither training nor selection saw them) over the whole training corpus:
  new questions about documents the model was tuned on.

Ranking, ties (they count against the model) and metrics: `embedtune.retrieval`.
"""

from __future__ import annotations

from pathlib import Path

from embedtune import io, tracking
from embedtune.config import EmbedConfig, EvalConfig, load_params
from embedtune.embeddings import load_embeddings, load_encoder
from embedtune.errors import run_stage
from embedtune.evaluation import (
    MODELS,
    QUERY_COLUMNS,
    evaluate,
    evaluate_benchmark,
    hit_rate_curve,
    query_rows,
)
from embedtune.methods.base import load_tuned
from embedtune.mined import load_mined
from embedtune.report import print_benchmarks, print_table, print_train_split
from embedtune.retrieval.beir import load_benchmark
from embedtune.retrieval.bootstrap import paired_bootstrap
from embedtune.retrieval.metrics import METRICS

PARAMS = {"seed": int, "embed": EmbedConfig, "eval": EvalConfig}


def benchmark_metrics(cfg: EvalConfig, embed: EmbedConfig, tuned, seed: int) -> dict[str, dict]:
    """Base and tuned figures on each benchmark, with tuned - base and its paired interval."""
    if not cfg.benchmarks:
        return {}
    sets = {Path(b).name: load_benchmark(b) for b in cfg.benchmarks}  # fail before encoding
    encoder = load_encoder(embed)
    figures = {}
    for name, bench in sets.items():
        result = evaluate_benchmark(bench, encoder, tuned, embed, cfg.metrics)
        base, tuned_ = result.per_query["base"], result.per_query["tuned"]
        delta = paired_bootstrap(base, tuned_, cfg.bootstrap, cfg.confidence, seed)
        figures[name] = {**result.metrics, "delta": delta}
    return figures


def seen_corpus_metrics(
    cfg: EvalConfig, emb, dataset: dict, tuned, seed: int, query_ids: list[str]
) -> dict:
    """Base and tuned figures of the seen-corpus questions over the whole training corpus,
    with tuned - base and its paired interval under "delta" ({} without such questions)."""
    if not query_ids:
        return {}
    result = evaluate(emb, dataset, tuned, cfg.metrics, query_ids)
    per_query = result.per_query
    delta = paired_bootstrap(
        per_query["base"], per_query["tuned"], cfg.bootstrap, cfg.confidence, seed
    )
    return {**result.metrics, "delta": delta}


def main() -> None:
    params = load_params(PARAMS)
    cfg: EvalConfig = params.eval
    for name in cfg.metrics:  # an unknown metric stops the stage before any model loads
        METRICS.get(name)
    tuned = load_tuned(io.TUNED_DIR, params.embed)
    results, datasets, embeddings = {}, {}, {}
    for split in ("validation", "train"):
        datasets[split] = io.load_qa(split)
        embeddings[split] = load_embeddings(io.EMBEDDINGS_DIR / f"{split}.safetensors")
        results[split] = evaluate(embeddings[split], datasets[split], tuned, cfg.metrics)
    seen = seen_corpus_metrics(
        cfg, embeddings["train"], datasets["train"], tuned, params.seed, load_mined().seen_corpus
    )
    validation = results["validation"]
    per_query = validation.per_query
    delta = paired_bootstrap(
        per_query["base"], per_query["tuned"], cfg.bootstrap, cfg.confidence, params.seed
    )
    benchmarks = benchmark_metrics(cfg, params.embed, tuned, params.seed)

    io.write_json(io.METRICS_DIR / "eval.json", validation.metrics)
    io.write_json(io.METRICS_DIR / "eval_delta.json", delta)
    io.write_json(io.METRICS_DIR / "eval_train.json", {"train": results["train"].metrics})
    io.write_json(io.METRICS_DIR / "benchmarks.json", benchmarks)
    io.write_json(io.METRICS_DIR / "eval_seen.json", seen)
    rows = [r for s in ("validation", "train") for r in query_rows(s, results[s], datasets[s])]
    io.write_csv(io.METRICS_DIR / "eval_queries.csv", rows, QUERY_COLUMNS)
    curve = hit_rate_curve(validation, max(cfg.metrics.get("hit_rate", [10])))
    io.write_csv(io.METRICS_DIR / "plots" / "hit_rate_vs_k.csv", curve, ["k", *MODELS])
    print_table(validation.metrics, delta)
    if seen:
        title = "seen corpus: {queries} new questions about the training documents"
        print_table(seen, seen["delta"], title)
    print_train_split(results["train"].metrics)
    print_benchmarks(benchmarks)
    tracking.log_eval(tuned.method, validation.metrics, delta)


if __name__ == "__main__":
    run_stage("eval", main)
