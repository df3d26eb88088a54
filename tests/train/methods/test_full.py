"""Method `full`: a full fine-tune of all-MiniLM-L6-v2 on a dozen pairs through the method's
`train`, the tuned model, and its folder as sentence-transformers and LlamaIndex load it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from embedtune.embeddings import embed_texts
from embedtune.errors import EmbedtuneError
from embedtune.retrieval.selection import HELDOUT_NAME, heldout_score, heldout_split
from embedtune.train.methods.base import (
    TrainingInputs,
    TrainingLog,
    get_method,
    load_tuned,
    save_tuned,
)
from embedtune.train.methods.full import FullConfig, FullMethod, FullModel
from tests.helpers.methods import PICKLE_SUFFIXES, embed_cfg, full_cfg, tiny_dataset

EMBED = embed_cfg()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    steps: list[tuple[int, float]] = []
    epochs: list[tuple[int, int, dict]] = []
    log = TrainingLog(
        lambda s, loss: steps.append((s, loss)), lambda e, s, m: epochs.append((e, s, m))
    )
    inputs = TrainingInputs(tiny_dataset(), EMBED)  # no embeddings: a full fine-tune reads texts
    model = get_method("full").train(inputs, full_cfg(), 42, log)
    folder = tmp_path_factory.mktemp("full") / "tuned"
    save_tuned(model, folder)
    return model, folder, steps, epochs


def test_the_full_config():
    train_cfg = full_cfg()
    assert isinstance(train_cfg, FullConfig) and train_cfg.loss.name == "mnrl"
    method = get_method("full")
    assert isinstance(method, FullMethod)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"optimizer": "sgd"}, r"train\.optimizer must be 'adamw', got 'sgd'"),
        ({"hard_negatives": -1}, r"train\.hard_negatives must be greater than or equal to 0"),
        ({"hard_negative_ranks": [3, 5]}, r"unknown key train\.hard_negative_ranks"),
        ({"max_seq_length": 0}, r"train\.max_seq_length must be greater than 0, got 0"),
        ({"matryoshka_dims": [64, 0]}, r"train\.matryoshka_dims must be > 0"),
        ({"warmup_ratio": 1.0}, r"train\.warmup_ratio must be less than 1"),
    ],
)
def test_bad_full_sections(edit, message):
    from embedtune.config import parse_section
    from embedtune.errors import EmbedtuneError
    from embedtune.train.methods.base import method_config

    raw = {**full_cfg().model_dump(), **edit}
    with pytest.raises(EmbedtuneError, match=message):
        parse_section("train", raw, method_config)


def test_training_logs_steps_and_held_out_epochs(trained):
    model, _, steps, epochs = trained
    assert isinstance(model, FullModel) and model.method == "full"
    train_ids, held_ids = heldout_split(tiny_dataset(), 0.25, 42)
    assert (len(train_ids), len(held_ids)) == (9, 3)
    assert [s for s, _ in steps] == [1, 2, 3]  # 9 pairs in batches of at most 4
    # The last batch is one pair, which has no in-batch negative: its loss is 0.
    assert steps[0][1] > 0 and steps[1][1] > 0 and steps[2][1] >= 0
    assert [(e, s) for e, s, _ in epochs] == [(0, 0), (1, 3)]
    assert all(list(m) == [HELDOUT_NAME] and 0 <= m[HELDOUT_NAME] <= 1 for _, _, m in epochs)


def test_the_logged_held_out_value_is_heldout_score_of_the_kept_model(trained):
    model, _, _, epochs = trained
    dataset = tiny_dataset()
    _, held = heldout_split(dataset, 0.25, 42)
    corpus_ids = list(dataset["corpus"])
    queries = model.encode_queries([dataset["queries"][q] for q in held], torch.zeros(0))
    corpus = model.encode_corpus([dataset["corpus"][c] for c in corpus_ids], torch.zeros(0))
    score = heldout_score(queries, corpus, held, corpus_ids, dataset["relevant_docs"])
    assert epochs[-1][2][HELDOUT_NAME] == pytest.approx(score, abs=1e-6)  # one epoch: it is kept


def test_training_changes_the_weights(trained, minilm):
    model, _, _, _ = trained
    tuned_state, base_state = model.encoder.state_dict(), minilm.state_dict()
    assert tuned_state.keys() == base_state.keys()
    assert any(not torch.equal(tuned_state[k], base_state[k]) for k in base_state)
    assert model.encoder is not minilm


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
        model.encoder.encode(texts, convert_to_tensor=True),
        atol=1e-6,
    )
    # The saved prompts make encode_query add the query prefix, as the training texts had it.
    assert torch.allclose(
        loaded.encode_query(["How are loops written?"], convert_to_tensor=True)[0],
        loaded.encode([texts[0]], convert_to_tensor=True)[0],
        atol=1e-6,
    )


def test_load_tuned_full_model(trained):
    model, folder, _, _ = trained
    tuned = load_tuned(folder, EMBED)
    assert isinstance(tuned, FullModel)
    assert (tuned.query_prefix, tuned.document_prefix, tuned.batch_size) == (
        "query: ",
        "passage: ",
        16,
    )
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
    assert torch.allclose(model.encode_queries(queries, ignored), q, atol=1e-6)
    assert torch.allclose(embed_texts(tuned.encoder, chunks, "passage: ", 16), d, atol=1e-6)
    # Without an embed config, the prefixes saved with the model are used.
    without = load_tuned(folder)
    assert (without.query_prefix, without.document_prefix) == ("query: ", "passage: ")
    assert torch.allclose(without.encode_queries(queries, ignored), q, atol=1e-6)
    assert tuned.encode_queries([], ignored[:0]).shape == (0, 384)


def test_a_truncated_full_model_is_one_line_naming_it(trained, tmp_path):
    _, folder, _, _ = trained
    copy = tmp_path / "models" / "tuned"
    shutil.copytree(folder, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: 1 << 20])  # a copy cut short at 1 MB
    with pytest.raises(EmbedtuneError) as info:
        load_tuned(copy, EMBED)
    assert str(info.value) == (
        f"{weights} is damaged (Error while deserializing header: incomplete metadata, file not "
        "fully covered): restore it with `dvc checkout models/tuned` or rebuild it with "
        "`dvc repro train`"
    )


def test_load_tuned_full_model_in_the_embed_dtype(trained):
    _, folder, _, _ = trained
    tuned = load_tuned(folder, embed_cfg(dtype="bfloat16"))
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
