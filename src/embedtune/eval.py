"""Stage `eval`: base vs tuned retrieval on the held-out validation documents (and benchmarks).

Usage: python -m embedtune.eval   (reads params.yaml; run by `dvc repro`)

Ranks every chunk of a split for every query of it by cosine similarity, once with the frozen
base model and once with the tuned model (`embedtune.tuned`), and writes:

- metrics/eval.json: {"base": {...}, "tuned": {...}} on the validation split: hit_rate@k and
  recall@k for each `eval.k`, mrr@10, ndcg@10 and the number of queries;
- metrics/eval_delta.json: tuned - base for every metric, with a paired bootstrap interval;
- metrics/eval_train.json: {"train": {"base": ..., "tuned": ...}}, the same on the training split
  (a large train/validation gap is overfitting);
- metrics/eval_queries.csv: per query, the rank of its best-ranked gold chunk for both models;
- metrics/plots/hit_rate_vs_k.csv: hit rate at k = 1..max(eval.k), base and tuned;
- metrics/benchmarks.json: the same metrics on each `eval.benchmarks` folder (BEIR layout).

Ties count against the model: a relevant chunk ranks after every other chunk with the same
score, so a collapsed model that scores everything equally gets zero, never a perfect score.
NDCG uses linear gains (the relevance grade) and log2 discounts, as BEIR's pytrec_eval does.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from embedtune import io
from embedtune.config import EmbedConfig, EvalConfig, load_params
from embedtune.embed import SplitEmbeddings, embed_texts, load_dataset, load_embeddings
from embedtune.errors import EmbedtuneError, run_stage
from embedtune.tuned import TunedModel, load_tuned

CUTOFF = 10  # MRR and NDCG are reported at this cut-off
MODELS = ("base", "tuned")
QUERY_COLUMNS = ("split", "query_id", "query", "gold_ids", "base_rank", "tuned_rank")
_PAIRS_PER_BLOCK = 256  # (query, relevant chunk) pairs compared against the corpus at once

Qrels = dict[str, dict[str, float]]  # query id -> {chunk id: relevance grade > 0}


@dataclass(frozen=True)
class Ranked:
    """Where the relevant chunks of each query landed in one model's ranking (1-based ranks)."""

    ranks: list[np.ndarray]  # per query: ranks of its relevant chunks
    grades: list[np.ndarray]  # per query: their relevance grades, in the same order

    @property
    def best(self) -> np.ndarray:
        """Rank of each query's best-ranked relevant chunk; 0 for a query without any."""
        return np.array([int(r.min()) if len(r) else 0 for r in self.ranks], dtype=np.int64)


@dataclass(frozen=True)
class SplitResult:
    """Per-query metric values and best gold ranks of both models on one split."""

    query_ids: list[str]
    per_query: dict[str, dict[str, np.ndarray]]  # model -> metric -> (queries,) values
    best: dict[str, np.ndarray]  # model -> (queries,) best gold rank, 0 = no relevant chunk

    @property
    def metrics(self) -> dict[str, dict]:
        return {model: summarize(self.per_query[model]) for model in MODELS}


@dataclass(frozen=True)
class Benchmark:
    """A retrieval test set in BEIR layout: corpus texts, query texts and graded qrels."""

    corpus: dict[str, str]
    queries: dict[str, str]  # only the queries that have at least one relevant document
    qrels: Qrels


def cosine_scores(queries: torch.Tensor, corpus: torch.Tensor) -> torch.Tensor:
    """(queries, chunks) cosine similarities; both sides are normalised here."""
    return F.normalize(queries.float(), dim=-1) @ F.normalize(corpus.float(), dim=-1).T


def relevance_matrix(query_ids: list[str], corpus_ids: list[str], qrels: Qrels) -> torch.Tensor:
    """(queries, chunks) relevance grades; 0 where a chunk is not relevant to a query."""
    column = {cid: i for i, cid in enumerate(corpus_ids)}
    relevance = torch.zeros(len(query_ids), len(corpus_ids))
    for qi, qid in enumerate(query_ids):
        for cid, grade in qrels.get(qid, {}).items():
            if cid not in column:
                raise EmbedtuneError(f"query {qid!r}: relevant chunk {cid!r} is not in the corpus")
            if grade > 0:
                relevance[qi, column[cid]] = float(grade)
    return relevance


def rank_relevant(scores: torch.Tensor, relevance: torch.Tensor) -> Ranked:
    """Rank of every relevant chunk of every query, ties counted against the model.

    A relevant chunk's rank is 1 + the chunks scored higher + the chunks scored equal that are
    less relevant (or equally relevant and earlier in the corpus).

    Args:
        scores: (queries, chunks) similarities.
        relevance: (queries, chunks) grades, 0 for chunks that are not relevant.

    Returns:
        Per query, the ranks and grades of its relevant chunks (empty arrays when it has none).
    """
    q_rows, d_cols = torch.nonzero(relevance > 0, as_tuple=True)
    pair_ranks = torch.empty(len(q_rows), dtype=torch.long)
    positions = torch.arange(scores.shape[1])
    for start in range(0, len(q_rows), _PAIRS_PER_BLOCK):
        q, d = q_rows[start : start + _PAIRS_PER_BLOCK], d_cols[start : start + _PAIRS_PER_BLOCK]
        row_scores, row_grades = scores[q], relevance[q]
        own_score, own_grade = row_scores[torch.arange(len(q)), d], relevance[q, d]
        tied = row_scores == own_score[:, None]
        ahead = (row_scores > own_score[:, None]) | (
            tied
            & (
                (row_grades < own_grade[:, None])
                | ((row_grades == own_grade[:, None]) & (positions < d[:, None]))
            )
        )
        pair_ranks[start : start + len(q)] = ahead.sum(dim=1) + 1
    grades = relevance[q_rows, d_cols]
    ranks_out, grades_out = [], []
    bounds = torch.searchsorted(q_rows, torch.arange(scores.shape[0] + 1))
    for qi in range(scores.shape[0]):
        lo, hi = int(bounds[qi]), int(bounds[qi + 1])
        ranks_out.append(pair_ranks[lo:hi].numpy())
        grades_out.append(grades[lo:hi].double().numpy())
    return Ranked(ranks_out, grades_out)


def hit_rate(ranked: Ranked, k: int) -> np.ndarray:
    """Per query: 1 when a relevant chunk is in the top k, else 0."""
    best = ranked.best
    return ((best >= 1) & (best <= k)).astype(np.float64)


def recall(ranked: Ranked, k: int) -> np.ndarray:
    """Per query: the share of its relevant chunks in the top k (0 without relevant chunks)."""
    return np.array([(r <= k).mean() if len(r) else 0.0 for r in ranked.ranks])


def mrr(ranked: Ranked, k: int = CUTOFF) -> np.ndarray:
    """Per query: 1 / rank of the best-ranked relevant chunk, 0 beyond k."""
    best = ranked.best
    hits = (best >= 1) & (best <= k)
    return np.where(hits, 1.0 / np.maximum(best, 1), 0.0)


def ndcg(ranked: Ranked, k: int = CUTOFF) -> np.ndarray:
    """Per query: NDCG@k with linear gains (the grades) and log2(rank + 1) discounts."""
    values = []
    for ranks, grades in zip(ranked.ranks, ranked.grades, strict=True):
        top = ranks <= k
        dcg = float((grades[top] / np.log2(ranks[top] + 1.0)).sum())
        ideal = np.sort(grades)[::-1][:k]
        idcg = float((ideal / np.log2(np.arange(2, len(ideal) + 2))).sum())
        values.append(dcg / idcg if idcg > 0 else 0.0)
    return np.array(values, dtype=np.float64)


def query_metrics(ranked: Ranked, ks: list[int]) -> dict[str, np.ndarray]:
    """Every reported metric, per query, in a stable key order."""
    values = {f"hit_rate@{k}": hit_rate(ranked, k) for k in sorted(set(ks))}
    values |= {f"recall@{k}": recall(ranked, k) for k in sorted(set(ks))}
    values[f"mrr@{CUTOFF}"] = mrr(ranked, CUTOFF)
    values[f"ndcg@{CUTOFF}"] = ndcg(ranked, CUTOFF)
    return values


def summarize(per_query: dict[str, np.ndarray]) -> dict:
    """Means over queries, rounded to 4 decimals, plus the query count."""
    counts = {len(v) for v in per_query.values()}
    summary: dict = {
        name: round(float(v.mean()), 4) if len(v) else 0.0 for name, v in per_query.items()
    }
    summary["queries"] = counts.pop() if counts else 0
    return summary


def paired_bootstrap(
    base: dict[str, np.ndarray],
    tuned: dict[str, np.ndarray],
    resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, dict]:
    """Tuned - base for each metric with a percentile interval from a paired bootstrap.

    The same resampled query sets serve every metric and both models, so the interval is that of
    the difference on the same questions. With `resamples` 0 the bounds are None.
    """
    names = list(base)
    n = len(next(iter(base.values()))) if names else 0
    if n == 0:
        raise EmbedtuneError("no queries to compare: check metrics/synth.json")
    rows = None
    if resamples > 0:
        rows = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    tail = (1.0 - confidence) / 2.0
    delta = {}
    for name in names:
        diff = tuned[name] - base[name]
        low = high = None
        if rows is not None:
            means = diff[rows].mean(axis=1)
            low, high = (round(float(x), 4) for x in np.quantile(means, [tail, 1.0 - tail]))
        delta[name] = {"diff": round(float(diff.mean()), 4), "low": low, "high": high}
    return delta


def hit_rate_curve(result: SplitResult, max_k: int) -> list[dict]:
    """Rows {k, base, tuned}: hit rate at every k from 1 to `max_k`."""
    rows = []
    for k in range(1, max_k + 1):
        row: dict = {"k": k}
        for model in MODELS:
            best = result.best[model]
            row[model] = round(float(((best >= 1) & (best <= k)).mean()), 4) if len(best) else 0.0
        rows.append(row)
    return rows


def compare(
    query_ids: list[str],
    corpus_ids: list[str],
    qrels: Qrels,
    embeddings: dict[str, tuple[torch.Tensor, torch.Tensor]],
    ks: list[int],
) -> SplitResult:
    """Rank and score the (queries, corpus) embeddings of each model against the qrels."""
    relevance = relevance_matrix(query_ids, corpus_ids, qrels)
    per_query, best = {}, {}
    for model in MODELS:
        for side, x in zip(("query", "chunk"), embeddings[model], strict=True):
            if not torch.isfinite(x).all():  # NaN scores would compare as never ranked higher
                raise EmbedtuneError(f"the {model} model gave non-finite {side} embeddings")
        ranked = rank_relevant(cosine_scores(*embeddings[model]), relevance)
        per_query[model] = query_metrics(ranked, ks)
        best[model] = ranked.best
    return SplitResult(list(query_ids), per_query, best)


def evaluate(emb: SplitEmbeddings, dataset: dict, tuned: TunedModel, ks: list[int]) -> SplitResult:
    """Base vs tuned on one split of our own QA data (binary relevance).

    Args:
        emb: base-model embeddings of the split's queries and chunks (`embed` stage).
        dataset: the split's `EmbeddingQAFinetuneDataset` dict (texts and `relevant_docs`).
        tuned: the tuned model; it gets texts and base embeddings, returns its embeddings.
        ks: cut-offs for hit rate and recall.
    """
    if not emb.query_ids:
        raise EmbedtuneError("split has no queries: check metrics/synth.json")
    query_texts = [dataset["queries"][qid] for qid in emb.query_ids]
    corpus_texts = [dataset["corpus"][cid] for cid in emb.corpus_ids]
    qrels = {
        qid: {cid: 1.0 for cid in dataset["relevant_docs"].get(qid, [])} for qid in emb.query_ids
    }
    embeddings = {
        "base": (emb.queries, emb.corpus),
        "tuned": (
            _as_tensor(tuned.encode_queries(query_texts, emb.queries)),
            _as_tensor(tuned.encode_corpus(corpus_texts, emb.corpus)),
        ),
    }
    return compare(emb.query_ids, emb.corpus_ids, qrels, embeddings, ks)


def evaluate_benchmark(
    bench: Benchmark, encoder, tuned: TunedModel, embed: EmbedConfig, ks: list[int]
) -> SplitResult:
    """Base vs tuned on a BEIR test set: the base model embeds it here, with the embed prefixes."""
    query_ids, corpus_ids = list(bench.queries), list(bench.corpus)
    query_texts = [bench.queries[i] for i in query_ids]
    corpus_texts = [bench.corpus[i] for i in corpus_ids]
    base_q = embed_texts(encoder, query_texts, embed.query_prefix, embed.batch_size)
    base_c = embed_texts(encoder, corpus_texts, embed.document_prefix, embed.batch_size)
    embeddings = {
        "base": (base_q, base_c),
        "tuned": (
            _as_tensor(tuned.encode_queries(query_texts, base_q)),
            _as_tensor(tuned.encode_corpus(corpus_texts, base_c)),
        ),
    }
    return compare(query_ids, corpus_ids, bench.qrels, embeddings, ks)


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(x).detach().float().cpu()


def query_rows(split: str, result: SplitResult, dataset: dict) -> list[dict]:
    """Rows of metrics/eval_queries.csv for one split (rank '' when a query has no gold chunk)."""
    rows = []
    for i, qid in enumerate(result.query_ids):
        rows.append(
            {
                "split": split,
                "query_id": qid,
                "query": dataset["queries"][qid],
                "gold_ids": " ".join(dataset["relevant_docs"].get(qid, [])),
                **{f"{model}_rank": int(result.best[model][i]) or "" for model in MODELS},
            }
        )
    return rows


def write_csv(path: Path, rows: list[dict], columns: tuple[str, ...] | list[str]) -> None:
    with io.atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# --- BEIR folders ----------------------------------------------------------------------------


def _read_jsonl_texts(path: Path, with_title: bool) -> dict[str, str]:
    if not path.is_file():
        raise EmbedtuneError(
            f"{path} not found (BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv)"
        )
    texts: dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise EmbedtuneError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise EmbedtuneError(f"{path}:{number}: expected a JSON object")
            doc_id, text = record.get("_id"), record.get("text")
            if not isinstance(doc_id, str | int) or isinstance(doc_id, bool) or doc_id == "":
                raise EmbedtuneError(f"{path}:{number}: missing or invalid _id")
            if not isinstance(text, str):
                raise EmbedtuneError(f"{path}:{number}: missing or invalid text")
            doc_id = str(doc_id)
            if doc_id in texts:
                raise EmbedtuneError(f"{path}:{number}: duplicate _id {doc_id!r}")
            title = record.get("title") if with_title else None
            if title is not None and not isinstance(title, str):
                raise EmbedtuneError(f"{path}:{number}: title must be a string")
            # BEIR's convention for dense retrievers: title and text joined by a space.
            texts[doc_id] = f"{title} {text}".strip() if title else text
    if not texts:
        raise EmbedtuneError(f"{path}: no records")
    return texts


def _read_qrels(path: Path, queries: dict[str, str], corpus: dict[str, str]) -> Qrels:
    if not path.is_file():
        raise EmbedtuneError(
            f"{path} not found (BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv)"
        )
    qrels: Qrels = {}
    with path.open(encoding="utf-8") as f:
        lines = enumerate(f, start=1)
        header = next(lines, (1, ""))[1].rstrip("\n").split("\t")
        if [h.strip() for h in header] != ["query-id", "corpus-id", "score"]:
            raise EmbedtuneError(
                f"{path}:1: header must be query-id<TAB>corpus-id<TAB>score, got {header!r}"
            )
        for number, line in lines:
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3:
                raise EmbedtuneError(f"{path}:{number}: expected 3 tab-separated fields")
            qid, cid, score = (x.strip() for x in fields)
            try:
                grade = float(score)
            except ValueError:
                raise EmbedtuneError(f"{path}:{number}: score {score!r} is not a number") from None
            if not math.isfinite(grade):
                raise EmbedtuneError(f"{path}:{number}: score {score!r} is not finite")
            if qid not in queries:
                raise EmbedtuneError(f"{path}:{number}: query-id {qid!r} is not in queries.jsonl")
            if cid not in corpus:
                raise EmbedtuneError(f"{path}:{number}: corpus-id {cid!r} is not in corpus.jsonl")
            if grade > 0:
                qrels.setdefault(qid, {})[cid] = grade
    if not qrels:
        raise EmbedtuneError(f"{path}: no pair with a score > 0")
    return qrels


def load_benchmark(folder: Path | str) -> Benchmark:
    """Read a BEIR folder; a bad file or line raises one `EmbedtuneError` naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EmbedtuneError(f"{folder}: benchmark folder not found (eval.benchmarks)")
    corpus = _read_jsonl_texts(folder / "corpus.jsonl", with_title=True)
    queries = _read_jsonl_texts(folder / "queries.jsonl", with_title=False)
    qrels = _read_qrels(folder / "qrels" / "test.tsv", queries, corpus)
    # BEIR scores only the queries that the test qrels judge relevant to something.
    return Benchmark(corpus, {q: queries[q] for q in queries if q in qrels}, qrels)


# --- entry point ---------------------------------------------------------------------------------


def main() -> None:
    from embedtune.report import print_table

    params = load_params()
    cfg: EvalConfig = params.eval
    tuned = load_tuned(io.TUNED_DIR, params.embed)
    results, datasets = {}, {}
    for split in ("validation", "train"):
        datasets[split] = load_dataset(split)
        emb = load_embeddings(io.EMBEDDINGS_DIR / f"{split}.safetensors")
        results[split] = evaluate(emb, datasets[split], tuned, cfg.k)
    validation = results["validation"]
    delta = paired_bootstrap(
        validation.per_query["base"],
        validation.per_query["tuned"],
        cfg.bootstrap,
        cfg.confidence,
        params.seed,
    )
    benchmarks = {}
    if cfg.benchmarks:
        from embedtune.embed import load_encoder

        sets = {Path(b).name: load_benchmark(b) for b in cfg.benchmarks}  # fail before encoding
        encoder = load_encoder(params.embed)
        for name, bench in sets.items():
            benchmarks[name] = evaluate_benchmark(
                bench, encoder, tuned, params.embed, cfg.k
            ).metrics

    io.write_json(io.METRICS_DIR / "eval.json", validation.metrics)
    io.write_json(io.METRICS_DIR / "eval_delta.json", delta)
    io.write_json(io.METRICS_DIR / "eval_train.json", {"train": results["train"].metrics})
    io.write_json(io.METRICS_DIR / "benchmarks.json", benchmarks)
    rows = [r for s in ("validation", "train") for r in query_rows(s, results[s], datasets[s])]
    write_csv(io.METRICS_DIR / "eval_queries.csv", rows, QUERY_COLUMNS)
    curve = hit_rate_curve(validation, max(cfg.k))
    write_csv(io.METRICS_DIR / "plots" / "hit_rate_vs_k.csv", curve, ("k", *MODELS))
    print_table(validation.metrics, delta)
    train = results["train"].metrics
    print(
        f"train split ({train['base']['queries']} queries): hit_rate@{max(cfg.k)} "
        f"base {train['base'][f'hit_rate@{max(cfg.k)}']:.4f}, "
        f"tuned {train['tuned'][f'hit_rate@{max(cfg.k)}']:.4f}"
    )
    for name, metrics in benchmarks.items():
        print(
            f"benchmark {name} ({metrics['base']['queries']} queries): ndcg@{CUTOFF} "
            f"base {metrics['base'][f'ndcg@{CUTOFF}']:.4f}, "
            f"tuned {metrics['tuned'][f'ndcg@{CUTOFF}']:.4f}"
        )
    log_to_mlflow(params, validation.metrics, delta)


def log_to_mlflow(params, metrics: dict, delta: dict) -> None:
    """Send this run's params and validation figures to MLflow when EMBEDTUNE_MLFLOW is on."""
    import dataclasses

    from embedtune import tracking

    run_name = f"{params.train.method} lr={params.train.lr:g}"
    tracking.log_run(run_name, dataclasses.asdict(params), {**metrics, "delta": delta})


if __name__ == "__main__":
    run_stage("eval", main)
