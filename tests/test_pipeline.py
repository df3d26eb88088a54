"""End to end: the real `dvc` and `git` CLIs on a temporary copy of the repository.

Runs the cpu preset shrunk to a few chunks per split, so the whole module takes a few minutes.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import SHRUNK, copy_run, run_cli
from tests.helpers.retrieval import write_beir

pytestmark = pytest.mark.slow

UPSTREAM = ("download", "chunk", "synth", "embed", "mine")


@pytest.fixture(scope="module")
def repo(shrunk_run, tmp_path_factory) -> Path:
    """A fresh git repository holding the project, after one shrunk `dvc exp run` (committed)."""
    dest = copy_run(shrunk_run, tmp_path_factory.mktemp("embedtune-repo"))
    run_cli(["git", "add", "-A"], dest)
    run_cli(["git", "commit", "-qm", "first run"], dest)
    return dest


def test_pipeline_writes_base_and_tuned_metrics(repo):
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    added = {"retrievers", "delta_retrievers", "shipped", "delta_shipped"}
    assert set(metrics) == {"base", "tuned", *added}
    assert {"bm25", "tuned+bm25:rrf60"} <= set(metrics["retrievers"])
    for model in ("base", "tuned"):
        assert metrics[model]["queries"] > 0
        assert 0.0 <= metrics[model]["hit_rate@5"] <= 1.0
        assert 0.0 <= metrics[model]["mrr@10"] <= metrics[model]["hit_rate@10"]
    shown = run_cli(["dvc", "metrics", "show", "--json"], repo).stdout
    assert "hit_rate@5" in shown
    assert (repo / "models/tuned/model.safetensors").is_file()
    # the retriever retrieve chose on held-out training questions is the one eval ships
    shipped = json.loads((repo / "models/retriever/retriever.json").read_text())
    verdict = json.loads((repo / "metrics/select.json").read_text())
    assert shipped["retriever"] == verdict["shipped"] == metrics["shipped"]["retriever"]
    # SHRUNK holds no questions out (train.holdout_fraction=0): the tuned model, as train keeps it
    assert (verdict["heldout_questions"], verdict["shipped"]) == (0, "tuned")


def test_pipeline_writes_examples_to_look_at(repo):
    page = (repo / "metrics/examples.md").read_text()
    assert "## Moved up" in page and "## Moved down" in page
    assert "| question | its chunk begins | base rank |" in page


def test_pipeline_exports_the_tuned_model_with_its_card(repo):
    folder = repo / "models/export/model"
    assert (folder / "modules.json").is_file() and (folder / "llamaindex_adapter").is_dir()
    card = (folder / "README.md").read_text()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    (tuned,) = [o for o in lock["train"]["outs"] if o["path"] == "models/tuned"]
    assert f"`models/tuned` md5 `{tuned['md5']}` (dvc.lock)" in card  # written before export ran
    # the run was made on the project's commit; the fixture committed its results after it
    project = run_cli(["git", "rev-parse", "HEAD~1"], repo).stdout.strip()
    assert f"git commit `{project}`" in card
    eval_mrr = json.loads((repo / "metrics/eval.json").read_text())["tuned"]["mrr@10"]
    assert "| **tuned (shipped)** |" in card and f"{eval_mrr:.4f} (" in card
    assert [o["path"] for o in lock["export"]["outs"]] == ["models/export"]


def test_second_repro_runs_no_stage(repo):
    out = run_cli(["dvc", "repro"], repo).stdout
    assert "Running stage" not in out
    assert "Data and pipelines are up to date." in out


def _synth_output_hash(repo: Path) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (qa,) = [o for o in lock["stages"]["synth"]["outs"] if o["path"] == "data/qa"]
    return qa["md5"]


def test_synth_rerun_is_byte_identical(repo):
    before = _synth_output_hash(repo)
    # An empty answer cache: the LLM really generates again.
    fresh = {"EMBEDTUNE_CACHE_DIR": str(repo.parent / "empty-cache")}
    run_cli(["dvc", "repro", "--force", "--single-item", "synth"], repo, env=fresh)
    # Same params, same chunks: the same question files, so nothing downstream is stale.
    assert _synth_output_hash(repo) == before
    assert "up to date" in run_cli(["dvc", "status"], repo).stdout


def test_lr_change_reruns_only_train_and_what_follows(repo):
    out = run_cli(["dvc", "exp", "run", *SHRUNK, "-S", "train.lr=0.05"], repo).stdout
    for stage in UPSTREAM:
        assert f"Running stage '{stage}'" not in out
    assert "Running stage 'train'" in out
    assert "Running stage 'select'" in out
    assert "Running stage 'eval'" in out
    assert "Running stage 'export'" in out

    diff = json.loads(run_cli(["dvc", "metrics", "diff", "--json"], repo).stdout)
    changed = diff["metrics/eval.json"]
    assert any(key.startswith("tuned.") for key in changed), changed
    assert not any(key.startswith("base.") for key in changed), changed
    params = json.loads(run_cli(["dvc", "params", "diff", "--json"], repo).stdout)
    lr = params["params.yaml"]["train.lr"]
    assert (lr["old"], lr["new"]) == (0.001, 0.05)


def test_fusion_change_reruns_only_retrieve_and_eval(repo):
    overrides = ["-S", "retrieve.fusion.convex=[{dense_weight: 0.6}]", "-S", "retrieve.bm25.k1=1.2"]
    out = run_cli(["dvc", "exp", "run", *SHRUNK, *overrides], repo).stdout
    for stage in (*UPSTREAM, "train"):
        assert f"Running stage '{stage}'" not in out
    assert "Running stage 'select'" in out and "Running stage 'eval'" in out
    assert "Running stage 'export'" in out  # the card reports the new figures
    retrievers = json.loads((repo / "metrics/eval.json").read_text())["retrievers"]
    assert "base+bm25:convex60" in retrievers and "base+bm25:convex50" not in retrievers


def test_round_trip_filter_reruns_mine_and_never_touches_validation_questions(repo):
    before = json.loads((repo / "metrics/eval.json").read_text())
    out = run_cli(["dvc", "exp", "run", *SHRUNK, "-S", "mine.roundtrip_top_k=1"], repo).stdout
    for stage in UPSTREAM[:-1]:
        assert f"Running stage '{stage}'" not in out
    assert all(f"Running stage '{s}'" in out for s in ("mine", "train", "eval"))
    counts = json.loads((repo / "metrics/mine.json").read_text())
    assert counts["roundtrip_dropped"] > 0  # the base model misses some training questions' chunk
    assert (
        counts["training"] + counts["roundtrip_dropped"] + counts["seen_corpus"]
        == counts["questions"]
    )
    after = json.loads((repo / "metrics/eval.json").read_text())
    # Validation questions are never filtered by the base model: same questions, same base.
    assert after["base"] == before["base"]
    seen = json.loads((repo / "metrics/eval_seen.json").read_text())
    assert seen["base"]["queries"] == counts["seen_corpus"] > 0


def test_bad_parameter_fails_with_one_line(repo):
    proc = run_cli(["dvc", "exp", "run", *SHRUNK, "-S", "train.lr=-1"], repo, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "embedtune train: error" in line]
    assert errors == [
        "embedtune train: error: params.yaml: train.lr must be greater than 0, got -1"
    ]
    assert "Traceback" not in proc.stderr
    # DVC removed the stage's outputs before running it; its cache still holds them.
    run_cli(["dvc", "checkout", "models/tuned"], repo)
    assert (repo / "models/tuned/model.safetensors").is_file()


def test_queued_lr_sweep_reuses_shared_stages(repo):
    sweep = [*SHRUNK, "-S", "train.lr=0.01,0.003"]
    run_cli(["dvc", "exp", "run", "--queue", *sweep], repo)
    run_cli(["dvc", "queue", "start", "-j", "1"], repo)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = run_cli(["dvc", "queue", "status"], repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    run_cli(["dvc", "queue", "stop", "--kill"], repo, check=False)
    tasks = [line.split() for line in status.splitlines()[1:] if line.strip()]
    done = [t for t in tasks if "Success" in t]
    assert len(done) == 2, status
    for task in done:
        log = run_cli(["dvc", "queue", "logs", task[0]], repo).stdout
        # The run-cache restores what the sweep shares; only train and eval run per experiment.
        for stage in UPSTREAM:
            assert f"Running stage '{stage}'" not in log, log
        assert "Running stage 'train'" in log
    shown = run_cli(["dvc", "exp", "show", "--json"], repo).stdout
    assert '"lr": 0.003' in shown and '"lr": 0.01' in shown


@pytest.fixture
def committed(repo) -> Path:
    """The repository back at its committed first run (earlier tests leave other params)."""
    run_cli(["git", "checkout", "--", "."], repo)
    run_cli(["dvc", "checkout", "--force"], repo)
    assert "up to date" in run_cli(["dvc", "status"], repo).stdout
    return repo


def _stages_to_rerun(repo: Path) -> set[str]:
    status = json.loads(run_cli(["dvc", "status", "--json"], repo).stdout)
    return set(status)


# A source edit -> exactly the stages whose results it can change (and none other).
TOUCHES = [
    ("src/embedtune/synth/questions.py", {"synth"}),
    ("src/embedtune/text.py", {"synth", "mine"}),  # both filters count the same words
    ("src/embedtune/synth/llm/openai_chat.py", {"synth"}),
    ("src/embedtune/reading/readers.py", {"download", "chunk"}),  # download checks what it reads
    ("src/embedtune/chunk/splitting.py", {"chunk"}),
    ("src/embedtune/train/methods/adapters.py", {"train", "select", "eval", "export"}),
    ("src/embedtune/train/losses/mnrl.py", {"train", "select", "eval", "export"}),
    ("src/embedtune/retrieval/beir.py", {"eval"}),
    ("src/embedtune/retrieval/fusion/rrf.py", {"select", "eval", "export"}),  # export checks it
    ("src/embedtune/retrieval/selection.py", {"train", "select", "eval", "export"}),
    ("src/embedtune/retrieval/metrics/mrr.py", {"train", "select", "eval", "export"}),
    ("src/embedtune/config.py", set(UPSTREAM) | {"train", "select", "eval", "export"}),
    ("src/embedtune/export/card.py", {"export"}),
]


@pytest.mark.parametrize(("path", "stages"), TOUCHES, ids=[t[0].split("/", 2)[2] for t in TOUCHES])
def test_a_source_edit_marks_exactly_the_stages_it_affects(committed, path, stages):
    repo = committed
    source = repo / path
    original = source.read_bytes()
    try:
        source.write_bytes(original + b"\n# edited\n")
        assert _stages_to_rerun(repo) == stages
    finally:
        source.write_bytes(original)
    assert "up to date" in run_cli(["dvc", "status"], repo).stdout


def test_an_edited_qrels_line_in_benchmarks_reruns_eval(committed):
    repo = committed
    tiny = write_beir(repo / "benchmarks" / "tiny")
    try:
        assert _stages_to_rerun(repo) == {"eval"}  # a new collection there
        run_cli(["dvc", "commit", "--force", "eval"], repo)  # as if eval had scored it
        assert "up to date" in run_cli(["dvc", "status"], repo).stdout
        qrels = tiny / "qrels" / "test.tsv"
        qrels.write_text(qrels.read_text().replace("q2\td-raise\t1", "q2\td-raise\t2"))
        assert _stages_to_rerun(repo) == {"eval"}
        dry = run_cli(["dvc", "repro", "--dry"], repo).stdout
        assert "Running stage 'eval'" in dry and "Running stage 'train'" not in dry
    finally:
        shutil.rmtree(tiny)
        run_cli(["git", "checkout", "--", "dvc.lock"], repo)
    assert "up to date" in run_cli(["dvc", "status"], repo).stdout


def _a_question_of_a_chunk_with_two(repo: Path) -> str:
    dataset = json.loads((repo / "data/qa/train.json").read_text())
    by_chunk: dict[str, list[str]] = {}
    for qid, (cid,) in dataset["relevant_docs"].items():
        by_chunk.setdefault(cid, []).append(dataset["queries"][qid])
    return next(questions[0] for questions in by_chunk.values() if len(questions) > 1)


def test_editing_a_question_filter_reruns_synth_and_what_follows(committed):
    repo = committed
    dropped = _a_question_of_a_chunk_with_two(repo)
    source = repo / "src/embedtune/synth/questions.py"
    rule = '    if not line.endswith("?"):\n        return "not_a_question"\n'
    text = source.read_text()
    assert rule in text
    # A stricter filter: this one question no longer passes.
    source.write_text(
        text.replace(rule, f"    if line == {dropped!r}:\n        return 'banned'\n" + rule)
    )
    out = run_cli(["dvc", "repro"], repo).stdout
    for stage in ("synth", "embed", "train", "eval", "export"):
        assert f"Running stage '{stage}'" in out, out
    assert "Running stage 'chunk'" not in out
    dataset = json.loads((repo / "data/qa/train.json").read_text())
    assert dropped not in dataset["queries"].values()
    assert json.loads((repo / "metrics/synth.json").read_text())["train"]["drops"]["banned"] == 1


def test_editing_the_adapter_loader_reruns_eval(committed):
    repo = committed
    source = repo / "src/embedtune/train/methods/adapters.py"
    text = source.read_text()
    anchor = "        adapter = self.rebuild(saved_config(folder))\n"
    assert anchor in text
    # train writes the same files after this edit, so only eval's own dependency on the
    # loader can make it rerun (before, eval kept metrics from the old loader).
    source.write_text(text.replace(anchor, anchor + "        adapter.requires_grad_(False)\n"))
    out = run_cli(["dvc", "repro"], repo).stdout
    assert "Running stage 'eval'" in out, out
    assert "Running stage 'synth'" not in out
