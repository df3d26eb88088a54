"""The exported folder gives the embeddings `eval` scored, for every method: tiny models trained
here on all-MiniLM-L6-v2, exported, loaded back with `SentenceTransformer(folder)` and with the
loading recipes of the model card (sentence-transformers, LlamaIndex, the nudge files)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from embedtune.embeddings import SplitEmbeddings, embed_dataset, load_encoder
from embedtune.errors import EmbedtuneError
from embedtune.export.model import Sources, adapter_modules, exported, save_exported
from embedtune.export.usage import FOLDER, loading
from embedtune.retrieval.evaluation import with_tuned
from embedtune.train.methods.base import (
    TrainingInputs,
    TrainingLog,
    get_method,
    load_tuned,
    save_tuned,
)
from embedtune.train.methods.nudge import text_key
from tests.helpers import cfg
from tests.helpers.export import FIELDS
from tests.helpers.methods import embed_cfg, full_cfg, tiny_dataset, validation_dataset

EMBED = embed_cfg()  # prefixes "query: " and "passage: ": the folder must add them itself
QUICK = {"holdout_fraction": 0.0, "holdout_min_questions": 0, "patience": 0}
TRAIN_CONFIGS = {
    "adapter_linear": lambda: cfg("train", lr=0.05, epochs=3, batch_size=4, **QUICK),
    "adapter_2layer": lambda: cfg(
        "train", "train=adapter_2layer", lr=0.05, epochs=3, batch_size=4, hidden_size=16, **QUICK
    ),
    "full": full_cfg,
    "nudge": lambda: cfg("train", "train=nudge", gammas=[0.0, 0.2, 0.4], **QUICK),
}
TIGHT = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(scope="module")
def splits(minilm) -> dict[str, tuple[dict, SplitEmbeddings]]:
    """Each split and its base embeddings, as `embed` writes them."""
    data = {"train": tiny_dataset(), "validation": validation_dataset()}
    return {name: (d, embed_dataset(minilm, d, EMBED)) for name, d in data.items()}


@dataclass
class Case:
    method: str
    tuned: object  # what eval loads from models/tuned
    folder: Path  # the exported folder


@pytest.fixture(scope="module", params=list(TRAIN_CONFIGS))
def case(request, splits, tmp_path_factory) -> Case:
    """A model trained with the method, saved as `train` saves it, loaded as `eval` loads it,
    and exported to <tmp>/models/export/model."""
    method = request.param
    dataset, emb = splits["train"]
    inputs = TrainingInputs(dataset, EMBED, _embeddings=emb)
    model = get_method(method).train(inputs, TRAIN_CONFIGS[method](), 0, TrainingLog())
    root = tmp_path_factory.mktemp(method)
    save_tuned(model, root / "tuned")
    tuned = load_tuned(root / "tuned", EMBED)
    sources = Sources(base=lambda: load_encoder(EMBED), train=lambda: splits["train"])
    folder = root / FOLDER
    prompts = {"query": EMBED.query_prefix, "document": EMBED.document_prefix}
    save_exported(exported(tuned, sources), folder, prompts, FIELDS, "## Tuned\n")
    return Case(method, tuned, folder)


def eval_embeddings(tuned, dataset: dict, emb: SplitEmbeddings) -> dict:
    """Base and tuned embeddings of a split's questions and chunks, as `eval` computes them."""
    queries = [dataset["queries"][q] for q in emb.query_ids]
    corpus = [dataset["corpus"][c] for c in emb.corpus_ids]
    return with_tuned(tuned, queries, corpus, emb.queries, emb.corpus)


def texts(dataset: dict, emb: SplitEmbeddings) -> tuple[list[str], list[str]]:
    return [dataset["queries"][q] for q in emb.query_ids], [
        dataset["corpus"][c] for c in emb.corpus_ids
    ]


def test_the_folder_gives_the_embeddings_eval_scored(case, splits):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(case.folder), device="cpu")  # no trust_remote_code
    for split in ("validation", "train"):
        dataset, emb = splits[split]
        expected = eval_embeddings(case.tuned, dataset, emb)["tuned"]
        queries, corpus = texts(dataset, emb)
        got_queries = model.encode_query(queries, convert_to_numpy=True)
        assert np.allclose(got_queries, expected[0].numpy(), **TIGHT), split
        if case.method != "nudge":  # nudge's training chunks are in its files (next test)
            got_corpus = model.encode_document(corpus, convert_to_numpy=True)
            assert np.allclose(got_corpus, expected[1].numpy(), **TIGHT), split


def test_the_tuned_model_really_differs_from_the_base(case, splits):
    dataset, emb = splits["validation" if case.method != "nudge" else "train"]
    (base_q, base_c), (tuned_q, tuned_c) = eval_embeddings(case.tuned, dataset, emb).values()
    changed_queries = not torch.allclose(base_q, tuned_q, atol=1e-4)
    changed_corpus = not torch.allclose(base_c, tuned_c, atol=1e-4)
    expected = {"adapter_linear": (True, False), "adapter_2layer": (True, False)}
    expected |= {"full": (True, True), "nudge": (False, True)}
    assert (changed_queries, changed_corpus) == expected[case.method]


def test_the_folder_holds_sentence_transformers_modules_only(case):
    modules = json.loads((case.folder / "modules.json").read_text())
    types = [m["type"] for m in modules]
    if case.method.startswith("adapter"):
        router = json.loads((case.folder / modules[-1]["path"] / "router_config.json").read_text())
        types += list(router["types"].values())
        assert router["parameters"]["default_route"] == "document"
    assert all(t.startswith("sentence_transformers.") for t in types), types
    assert types[len(modules) - 1].endswith(("Normalize", "Router"))
    config = json.loads((case.folder / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == {"query": "query: ", "document": "passage: "}
    assert config["similarity_fn_name"] == "cosine"
    assert (case.folder / "README.md").read_text().endswith("## Tuned\n")


def run_snippets(card: str, root: Path, monkeypatch) -> dict:
    """Run the card's Python blocks in order, in one namespace, from `root` (the folder is
    <root>/models/export/model): what a user copying them gets."""
    monkeypatch.chdir(root)
    namespace: dict = {}
    for block in re.findall(r"```python\n(.*?)```", card, flags=re.DOTALL):
        exec(compile(block, "<card>", "exec"), namespace)
    return namespace


def test_the_cards_loading_recipes_give_the_embeddings_eval_scored(case, splits, monkeypatch):
    adapter = case.method.startswith("adapter")
    dataset, emb = splits["train"]
    chunks = len(exported_chunks(case.folder)[0]) if case.method == "nudge" else 0
    card = loading(case.method, EMBED.model_dump(), adapter, chunks)
    ran = run_snippets(card, case.folder.parents[2], monkeypatch)
    expected_q, expected_c = eval_embeddings(case.tuned, dataset, emb)["tuned"]
    queries, corpus = texts(dataset, emb)
    llama = ran["tuned_model" if adapter else "embed_model"]
    got_q = np.array([llama.get_query_embedding(q) for q in queries[:3]])
    # LlamaIndex's HuggingFaceEmbedding normalises; the adapter sees the normalised base
    assert np.allclose(got_q, expected_q[:3].numpy(), rtol=1e-5, atol=1e-5)
    if case.method != "nudge":
        got_c = np.array(llama.get_text_embedding_batch(corpus[:3]))
        assert np.allclose(got_c, expected_c[:3].numpy(), rtol=1e-5, atol=1e-5)
    else:
        assert torch.allclose(ran["vectors"], exported_chunks(case.folder)[1])
        assert [c["id"] for c in ran["chunks"]] == exported_chunks(case.folder)[0]
    assert ran["scores"].shape == (1, 1)


def exported_chunks(folder: Path) -> tuple[list[str], torch.Tensor]:
    from safetensors.torch import load_file

    rows = [json.loads(line) for line in (folder / "chunks.jsonl").read_text().splitlines()]
    return [r["id"] for r in rows], load_file(str(folder / "chunk_embeddings.safetensors"))[
        "embeddings"
    ]


def test_nudge_files_hold_the_moved_chunks_in_row_order(case, splits):
    if case.method != "nudge":
        assert not (case.folder / "chunks.jsonl").exists()
        return
    from safetensors.torch import load_file

    dataset, emb = splits["train"]
    rows = [json.loads(line) for line in (case.folder / "chunks.jsonl").read_text().splitlines()]
    vectors = load_file(str(case.folder / "chunk_embeddings.safetensors"))["embeddings"]
    assert len(rows) == len(vectors) > 0
    moved = set(case.tuned.keys)
    expected_ids = [c for c in emb.corpus_ids if text_key(dataset["corpus"][c]) in moved]
    assert [r["id"] for r in rows] == expected_ids  # every moved chunk, in the file's order
    assert all(r["text"] == dataset["corpus"][r["id"]] for r in rows)
    tuned_corpus = eval_embeddings(case.tuned, dataset, emb)["tuned"][1]
    index = [emb.corpus_ids.index(r["id"]) for r in rows]
    assert np.allclose(vectors.numpy(), tuned_corpus[index].numpy(), **TIGHT)
    assert not torch.allclose(vectors, emb.corpus[index], atol=1e-4)


def test_an_adapter_without_modules_is_refused():
    class Unknown(torch.nn.Module):
        pass

    with pytest.raises(EmbedtuneError, match=r"no sentence-transformers modules for the adapter"):
        adapter_modules(Unknown())


def test_a_tuned_model_without_exporter_is_refused():
    class Toy:
        method = "toy"

    with pytest.raises(EmbedtuneError, match=r"^train\.method=toy: no exporter for Toy; register"):
        exported(Toy(), Sources(base=list, train=dict))


@pytest.fixture(scope="module")
def unnormalised_embed(minilm, tmp_path_factory):
    """An embed config whose model is all-MiniLM-L6-v2 without its Normalize module."""
    from sentence_transformers import SentenceTransformer

    folder = tmp_path_factory.mktemp("unnormalised") / "base"
    SentenceTransformer(modules=[minilm[0], minilm[1]], device="cpu").save(str(folder))
    return embed_cfg(model=str(folder))


@pytest.mark.parametrize("method", ["adapter_linear", "full"])
def test_a_base_model_without_normalisation_is_normalised_as_eval_does(
    method, unnormalised_embed, splits, tmp_path
):
    from sentence_transformers import SentenceTransformer

    from embedtune.train.methods.adapters import AdapterModel
    from embedtune.train.methods.full import FullModel
    from embedtune.train.methods.linear import LinearAdapter

    embed = unnormalised_embed
    encoder = load_encoder(embed)
    assert abs(float(encoder.encode(["x"], convert_to_tensor=True).norm()) - 1) > 0.1
    if method == "full":
        tuned = FullModel(encoder, embed.query_prefix, embed.document_prefix, embed.batch_size)
    else:
        torch.manual_seed(0)
        adapter = LinearAdapter(384)
        torch.nn.init.normal_(adapter.linear.weight, std=0.1)
        tuned = AdapterModel(method, adapter)
    prompts = {"query": embed.query_prefix, "document": embed.document_prefix}
    result = exported(tuned, Sources(base=lambda: load_encoder(embed), train=dict))
    save_exported(result, tmp_path / "model", prompts, FIELDS, "")
    model = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    dataset, _ = splits["validation"]
    emb = embed_dataset(encoder, dataset, embed)
    expected_q, expected_c = eval_embeddings(tuned, dataset, emb)["tuned"]
    queries, corpus = texts(dataset, emb)
    assert np.allclose(model.encode_query(queries), expected_q.numpy(), **TIGHT)
    assert np.allclose(model.encode_document(corpus), expected_c.numpy(), **TIGHT)
