"""Stage `eval` for real in a temporary working directory: params.yaml, the QA splits, their
base embeddings, a tuned model saved by `embedtune.train.methods` and a BEIR folder in; every
metrics file out."""

from __future__ import annotations

import csv
import json
import re
import shutil

import pytest
import yaml

import embedtune.eval.__main__ as eval_stage
from embedtune import io
from embedtune.sampling import at_most
from embedtune.stage import run_stage
from embedtune.train.methods.adapters import AdapterModel
from embedtune.train.methods.base import save_tuned
from embedtune.train.methods.linear import LinearAdapter
from tests.helpers import cfg
from tests.helpers.eval import DATASET, SHIPPED, TRAIN, ship, write_params

CANDIDATES = [
    "base", "tuned", "bm25",
    *(f"{dense}+bm25:{f}" for dense in ("base", "tuned")
      for f in ("rrf60", "convex30", "convex50", "convex70")),
]  # fmt: skip


def read_json(path):
    return json.loads(path.read_text())


def test_stage_writes_every_output(eval_workdir, capsys):
    write_params(eval_workdir, benchmarks=["beir/tiny"])
    eval_stage.main()

    metrics = read_json(eval_workdir / "metrics/eval.json")
    added = {"retrievers", "delta_retrievers", "shipped", "delta_shipped"}
    assert set(metrics) == {"base", "tuned", *added}
    keys = ["hit_rate@1", "hit_rate@3", "mrr@10", "ndcg@10", "queries"]
    assert sorted(metrics["base"]) == sorted(metrics["tuned"]) == keys
    assert_every_retriever(metrics)
    assert metrics["base"]["queries"] == 4
    assert metrics["base"]["hit_rate@3"] == 0.75  # q-none has no gold chunk
    assert metrics["tuned"] != metrics["base"]

    delta = read_json(eval_workdir / "metrics/eval_delta.json")
    assert set(delta) == set(keys) - {"queries"}
    for name, d in delta.items():
        assert d["diff"] == pytest.approx(metrics["tuned"][name] - metrics["base"][name], abs=2e-4)
        assert d["low"] <= d["diff"] <= d["high"]

    train = read_json(eval_workdir / "metrics/eval_train.json")
    assert list(train) == ["train"]
    assert train["train"]["base"]["queries"] == 3
    assert_every_retriever(train["train"])
    # BM25 stems "remove"/"removes" and matches "generator"; "closed after use" shares no word
    # with any chunk, so all three tie at 0 and its chunk ranks last (ties count against)
    bm25 = train["train"]["retrievers"]["bm25"]
    assert (bm25["hit_rate@1"], bm25["mrr@10"]) == (0.6667, 0.7778)

    # The questions `mine` set aside, over the whole training corpus, with their interval.
    seen = read_json(eval_workdir / "metrics/eval_seen.json")
    assert seen["base"]["queries"] == seen["tuned"]["queries"] == 2
    assert seen["base"]["hit_rate@3"] == 1.0  # three chunks: every gold chunk is in the top 3
    for name, d in seen["delta"].items():
        assert d["diff"] == pytest.approx(seen["tuned"][name] - seen["base"][name], abs=2e-4)
    assert_every_retriever(seen)

    benchmarks = read_json(eval_workdir / "metrics/benchmarks.json")
    assert list(benchmarks) == ["tiny"]
    assert benchmarks["tiny"]["base"]["queries"] == 2
    assert sorted(benchmarks["tiny"]["tuned"]) == keys
    # tuned - base on the benchmark's queries, with its paired interval, for every metric
    bench_delta = benchmarks["tiny"]["delta"]
    assert sorted(bench_delta) == sorted(k for k in keys if k != "queries")
    for name, d in bench_delta.items():
        tiny = benchmarks["tiny"]
        assert d["diff"] == pytest.approx(tiny["tuned"][name] - tiny["base"][name], abs=2e-4)
        assert d["low"] <= d["diff"] <= d["high"]
    assert_every_retriever(benchmarks["tiny"])

    with (eval_workdir / "metrics/eval_queries.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["split"] for r in rows] == ["validation"] * 4 + ["train"] * 3
    assert [r["query_id"] for r in rows] == [*DATASET["queries"], *TRAIN["queries"]]
    assert rows[0]["base_rank"] == "1" and rows[3]["base_rank"] == ""

    curve = list(csv.DictReader((eval_workdir / "metrics/plots/hit_rate_vs_k.csv").open()))
    assert [r["k"] for r in curve] == ["1", "2", "3"]  # up to the largest hit_rate cut-off
    assert float(curve[0]["base"]) == metrics["base"]["hit_rate@1"]
    assert float(curve[2]["tuned"]) == metrics["tuned"]["hit_rate@3"]

    out = capsys.readouterr().out
    assert "seen corpus: 2 new questions about the training documents" in out
    assert "validation split, 4 held-out queries" in out
    assert "hit_rate@1" in out and "tuned - base" in out and "interval" in out
    assert "train split (3 queries): hit_rate@3 base 1.0000" in out
    assert re.search(r"benchmark tiny \(2 queries\): ndcg@10 base \S+ tuned \S+ diff \S+ \[", out)
    for where in ("validation split", "seen corpus", "train split", "benchmark tiny"):
        assert f"{where}: every retriever" in out
    assert f"shipped: {SHIPPED}" in out


def assert_every_retriever(figures: dict) -> None:
    """Every candidate's summary, its interval against base, and the shipped one's."""
    retrievers = figures["retrievers"]
    assert list(retrievers) == sorted(CANDIDATES)  # sorted JSON
    assert retrievers["base"] == figures["base"] and retrievers["tuned"] == figures["tuned"]
    assert set(figures["delta_retrievers"]) == set(CANDIDATES) - {"base"}
    for name, delta in figures["delta_retrievers"].items():
        for metric, d in delta.items():
            diff = retrievers[name][metric] - retrievers["base"][metric]
            assert d["diff"] == pytest.approx(diff, abs=2e-4)
            assert d["low"] <= d["diff"] <= d["high"]
    assert figures["shipped"] == {"retriever": SHIPPED, **retrievers[SHIPPED]}
    assert figures["delta_shipped"] == figures["delta_retrievers"][SHIPPED]


def test_identity_adapter_and_no_bootstrap(eval_workdir):
    save_tuned(AdapterModel("adapter_linear", LinearAdapter(384)), io.TUNED_DIR)
    write_params(eval_workdir, bootstrap=0, metrics={"recall": [2], "mrr": [5]})
    eval_stage.main()
    metrics = read_json(eval_workdir / "metrics/eval.json")
    assert metrics["tuned"] == metrics["base"]
    assert list(metrics["base"]) == ["mrr@5", "queries", "recall@2"]  # sorted JSON
    delta = read_json(eval_workdir / "metrics/eval_delta.json")
    assert delta == {n: {"diff": 0.0, "low": None, "high": None} for n in ("recall@2", "mrr@5")}
    assert read_json(eval_workdir / "metrics/benchmarks.json") == {}
    # without hit_rate in eval.metrics, the curve goes to k = 10
    curve = (eval_workdir / "metrics/plots/hit_rate_vs_k.csv").read_text().splitlines()
    assert curve[0] == "k,base,tuned" and len(curve) == 1 + 10
    examples = (eval_workdir / "metrics/examples.md").read_text()
    assert examples.startswith("# Examples: validation questions the retriever moved most")
    assert "## Moved up" in examples and "## Moved down" in examples
    assert "on 4 validation questions" in examples


def test_same_params_same_outputs(eval_workdir):
    write_params(eval_workdir)
    eval_stage.main()
    first = {p.name: p.read_bytes() for p in (eval_workdir / "metrics").iterdir() if p.is_file()}
    eval_stage.main()
    again = {p.name: p.read_bytes() for p in (eval_workdir / "metrics").iterdir() if p.is_file()}
    assert again == first  # the bootstrap is seeded


def query_rows_of(eval_workdir, split: str) -> dict[str, dict]:
    with (eval_workdir / "metrics/eval_queries.csv").open() as f:
        return {r["query_id"]: r for r in csv.DictReader(f) if r["split"] == split}


def test_train_questions_scores_a_seeded_sample_over_the_whole_training_corpus(eval_workdir):
    write_params(eval_workdir, train_questions=None)
    eval_stage.main()
    every = query_rows_of(eval_workdir, "train")
    validation = (eval_workdir / "metrics/eval.json").read_bytes()
    write_params(eval_workdir, train_questions=2)
    eval_stage.main()
    sample = query_rows_of(eval_workdir, "train")
    assert read_json(eval_workdir / "metrics/eval_train.json")["train"]["base"]["queries"] == 2
    assert list(sample) == at_most(list(TRAIN["queries"]), 2, 0, "eval")  # seed 0, file order
    # each sampled question ranks as it did among all of them: still over the whole corpus
    assert sample == {qid: every[qid] for qid in sample}
    assert (eval_workdir / "metrics/eval.json").read_bytes() == validation
    write_params(eval_workdir, train_questions=3)  # as many as there are: all of them
    eval_stage.main()
    assert query_rows_of(eval_workdir, "train") == every


def test_benchmarks_are_embedded_once_and_score_the_same_without_the_cache(
    eval_workdir, monkeypatch, capsys
):
    write_params(eval_workdir, benchmarks=["beir/tiny"])

    def outputs() -> dict:
        eval_stage.main()
        return {p.name: p.read_bytes() for p in (eval_workdir / "metrics").iterdir() if p.is_file()}

    first = outputs()
    assert "benchmarks: 0 blocks of rows read from" in capsys.readouterr().out
    cached = sorted((eval_workdir / "cache" / "benchmarks").rglob("*.safetensors"))
    assert len(cached) == 2  # the benchmark's queries and its corpus, by the base model
    assert outputs() == first
    assert f"benchmarks: 2 blocks of rows read from {eval_workdir}/cache/benchmarks, 0 encoded" in (
        capsys.readouterr().out
    )
    (eval_workdir / "nowhere").write_text("a file, not a folder")
    monkeypatch.setenv(io.CACHE_ENV, str(eval_workdir / "nowhere"))
    assert outputs() == first
    warnings = [w for w in capsys.readouterr().err.splitlines() if "warning" in w]
    assert len(warnings) == 1 and "nowhere/benchmarks cannot be written" in warnings[0]


def fails_with(capsys, message: str) -> str:
    with pytest.raises(SystemExit) as info:
        run_stage("eval", eval_stage.main)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("embedtune eval: error: ") and err.count("\n") == 1
    assert message in err
    return err


def test_missing_tuned_model(eval_workdir, capsys):
    write_params(eval_workdir)
    (io.TUNED_DIR / "config.json").unlink()
    fails_with(capsys, "models/tuned/config.json not found: run `dvc repro train` first")
    assert not (eval_workdir / "metrics").exists()


def test_missing_embeddings(eval_workdir, capsys):
    write_params(eval_workdir)
    (io.EMBEDDINGS_DIR / "train.safetensors").unlink()
    fails_with(capsys, "data/embeddings/train.safetensors not found: run `dvc repro embed` first")
    assert not (eval_workdir / "metrics").exists()


def test_unknown_metric(eval_workdir, capsys):
    write_params(eval_workdir, metrics={"hit_rate": [1], "precision": [5]})
    shutil.rmtree(io.TUNED_DIR)  # the metric is checked first, before any model loads
    fails_with(capsys, "eval.metrics='precision' is not known (known: hit_rate, mrr, ndcg, recall)")
    assert not (eval_workdir / "metrics").exists()


def test_missing_benchmark_fails_before_writing(eval_workdir, capsys):
    write_params(eval_workdir, benchmarks=["beir/tiny", "beir/nowhere"])
    fails_with(capsys, "beir/nowhere: benchmark folder not found (eval.benchmarks)")
    assert not (eval_workdir / "metrics").exists()


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"metrics": {"hit_rate": [0]}}, "eval.metrics.hit_rate must list cut-offs > 0, got [0]"),
        ({"metrics": {}}, "eval.metrics "),
        ({"bootstrap": -1}, "eval.bootstrap must be greater than or equal to 0"),
        ({"confidence": 1.0}, "eval.confidence must be less than 1"),
        ({"k": [1, 5]}, "unknown key eval.k"),
    ],
)
def test_bad_eval_params(eval_workdir, capsys, update, message):
    write_params(eval_workdir)
    params = yaml.safe_load((eval_workdir / "params.yaml").read_text())
    params["eval"] = cfg("eval").model_dump()
    params["eval"].update(update)
    (eval_workdir / "params.yaml").write_text(yaml.safe_dump(params))
    fails_with(capsys, f"params.yaml: {message}")


def test_a_shipped_retriever_params_do_not_list_is_refused(eval_workdir, capsys):
    write_params(eval_workdir)
    ship("base+bm25:rrf10")
    fails_with(capsys, "ships 'base+bm25:rrf10', which params.yaml's retrieve section does not")
    shutil.rmtree(io.RETRIEVER_DIR)
    fails_with(capsys, "models/retriever/retriever.json not found: run `dvc repro select`")
    assert not (eval_workdir / "metrics").exists()


def test_stage_logs_to_mlflow_when_switched_on(eval_workdir, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("EMBEDTUNE_MLFLOW", "1")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (eval_workdir / "mlruns").as_uri())
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    write_params(eval_workdir)
    params = yaml.safe_load((eval_workdir / "params.yaml").read_text())
    params["train"] = {"method": "adapter_linear", "lr": 0.25}  # read raw, for the run name only
    (eval_workdir / "params.yaml").write_text(yaml.safe_dump(params))
    eval_stage.main()
    (run,) = mlflow.search_runs(experiment_names=["embedtune"], output_format="list")
    assert run.info.run_name == "adapter_linear lr=0.25"
    metrics = read_json(eval_workdir / "metrics/eval.json")
    assert run.data.metrics["tuned.mrr_at_10"] == pytest.approx(metrics["tuned"]["mrr@10"])
    delta = read_json(eval_workdir / "metrics/eval_delta.json")
    assert run.data.metrics["delta.mrr_at_10.diff"] == pytest.approx(delta["mrr@10"]["diff"])
    assert run.data.params["eval.bootstrap"] == "50"
