"""What the adapter methods share: training through `TrainingInputs`, the tuned model (queries
mapped, chunks kept), saving and loading, and LlamaIndex's `AdapterEmbeddingModel` running
our saved adapter on all-MiniLM-L6-v2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from embedtune.embeddings import embed_texts, save_embeddings
from embedtune.retrieval.selection import HELDOUT_NAME
from embedtune.train.methods.adapters import AdapterConfig, AdapterMethod, AdapterModel
from embedtune.train.methods.base import (
    TrainingInputs,
    TrainingLog,
    get_method,
    load_tuned,
    save_tuned,
)
from embedtune.train.methods.linear import LinearAdapter
from embedtune.train.methods.two_layer import TwoLayerAdapter
from tests.helpers import cfg
from tests.helpers.methods import synthetic

METHODS = {"adapter_linear": (), "adapter_2layer": ("train=adapter_2layer",)}


@pytest.fixture(scope="module")
def data():
    return synthetic()


def adapter_cfg(method: str, **updates) -> AdapterConfig:
    extra = {"hidden_size": 16} if method == "adapter_2layer" else {}
    base = {"lr": 0.05, "epochs": 2, "batch_size": 16, "holdout_fraction": 0.25, "patience": 0}
    return cfg("train", *METHODS[method], **{**base, **extra, **updates})


@pytest.mark.parametrize("method", list(METHODS))
def test_train_through_the_method(data, method, tmp_path):
    (emb, dataset), _ = data
    train_cfg = adapter_cfg(method)
    found = get_method(method)
    assert isinstance(found, AdapterMethod)
    epochs: list[int] = []
    steps: list[int] = []
    log = TrainingLog(lambda s, _: steps.append(s), lambda e, s, m: epochs.append(e))
    model = found.train(TrainingInputs(dataset, cfg("embed"), _embeddings=emb), train_cfg, 3, log)
    assert isinstance(model, AdapterModel) and model.method == method
    assert not model.adapter.training
    assert epochs == [0, 1, 2] and steps == list(range(1, len(steps) + 1)) and steps
    # From the embeddings file (what the stage does), the same training gives the same adapter.
    path = tmp_path / "train.safetensors"
    save_embeddings(path, emb)
    again = found.train(TrainingInputs(dataset, cfg("embed"), path), train_cfg, 3, TrainingLog())
    for name, value in model.adapter.state_dict().items():
        assert torch.equal(again.adapter.state_dict()[name], value)


def test_the_tuned_model_maps_queries_only():
    torch.manual_seed(0)
    adapter = TwoLayerAdapter(5, 7)
    with torch.no_grad():
        adapter.residual_weight.fill_(1.0)
    tuned = AdapterModel("adapter_2layer", adapter)
    base = torch.randn(3, 5)
    queries = tuned.encode_queries(["a", "b", "c"], base)
    assert torch.equal(queries, adapter(base).detach()) and not queries.requires_grad
    assert not torch.allclose(queries, base)
    assert torch.equal(tuned.encode_corpus(["a", "b", "c"], base), base)


@pytest.mark.parametrize("method", list(METHODS))
def test_save_and_load_a_trained_adapter(data, method, tmp_path):
    (emb, dataset), (test_emb, _) = data
    inputs = TrainingInputs(dataset, cfg("embed"), _embeddings=emb)
    model = get_method(method).train(inputs, adapter_cfg(method), 0, TrainingLog())
    save_tuned(model, tmp_path / "tuned")
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["method"] == method
    loaded = load_tuned(tmp_path / "tuned")
    assert isinstance(loaded, AdapterModel) and loaded.method == method
    assert type(loaded.adapter) is type(model.adapter)
    assert not loaded.adapter.training
    assert torch.equal(
        loaded.encode_queries([], test_emb.queries), model.encode_queries([], test_emb.queries)
    )
    # Saving again replaces the folder (the stage rerun).
    save_tuned(AdapterModel("adapter_linear", LinearAdapter(16)), tmp_path / "tuned")
    assert isinstance(load_tuned(tmp_path / "tuned").adapter, LinearAdapter)


def test_training_inputs_of_an_adapter_never_load_the_encoder(data):
    (emb, dataset), _ = data
    inputs = TrainingInputs(dataset, cfg("embed", model="/nonexistent/model"), _embeddings=emb)
    get_method("adapter_linear").train(inputs, adapter_cfg("adapter_linear"), 0, TrainingLog())
    assert inputs._encoder is None


def test_held_out_values_are_logged_under_the_eval_name(data):
    (emb, dataset), _ = data
    seen: list[dict] = []
    inputs = TrainingInputs(dataset, cfg("embed"), _embeddings=emb)
    log = TrainingLog(epoch=lambda e, s, m: seen.append(m))
    get_method("adapter_linear").train(inputs, adapter_cfg("adapter_linear"), 0, log)
    assert seen and all(list(m) == [HELDOUT_NAME] for m in seen)


# --- LlamaIndex loads our adapters ----------------------------------------------------------


@pytest.fixture(scope="module")
def llama_minilm():
    """The base model as LlamaIndex's HuggingFaceEmbedding."""
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from embedtune.weights import resolve_model

    embed = cfg("embed")
    return HuggingFaceEmbedding(model_name=resolve_model(embed.model, "embed.model"), device="cpu")


def llamaindex_adapter(folder: Path):
    """LlamaIndex's own class, built from our config.json, weights from our safetensors."""
    from llama_index.embeddings.adapter.utils import LinearLayer, TwoLayerNN
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    cls = {"adapter_linear": LinearLayer, "adapter_2layer": TwoLayerNN}[config.pop("method")]
    adapter = cls(**config)
    adapter.load_state_dict(load_file(str(folder / "model.safetensors")))  # strict: same names
    return adapter.eval()


def random_adapter(method: str, dim: int) -> torch.nn.Module:
    torch.manual_seed(1)
    if method == "adapter_linear":
        adapter = LinearAdapter(dim)
        torch.nn.init.normal_(adapter.linear.weight, std=0.1)
        torch.nn.init.normal_(adapter.linear.bias, std=0.1)
    else:
        adapter = TwoLayerAdapter(dim, 32, bias=False)
        with torch.no_grad():
            adapter.residual_weight.fill_(0.7)
    return adapter.eval()


@pytest.mark.parametrize("method", list(METHODS))
def test_llamaindex_adapter_embedding_model_runs_our_adapter(
    minilm, llama_minilm, tmp_path, method
):
    from llama_index.embeddings.adapter import AdapterEmbeddingModel

    save_tuned(AdapterModel(method, random_adapter(method, 384)), tmp_path)
    theirs = llamaindex_adapter(tmp_path)

    class Loaded:  # AdapterEmbeddingModel builds its adapter with `adapter_cls.load(path)`
        @staticmethod
        def load(path: str):
            assert Path(path) == tmp_path
            return theirs

    model = AdapterEmbeddingModel(
        base_embed_model=llama_minilm, adapter_path=str(tmp_path), adapter_cls=Loaded, device="cpu"
    )
    query = "How does a for statement iterate over a sequence?"
    got = torch.tensor(model.get_query_embedding(query))
    base = embed_texts(minilm, [query], "", 32)
    expected = load_tuned(tmp_path).encode_queries([query], base)[0]
    assert not torch.allclose(expected, base[0], atol=1e-3)  # the adapter does something
    assert torch.allclose(got, expected, atol=1e-5)
    document = "The for statement is used to iterate over the elements of a sequence."
    document_embedding = embed_texts(minilm, [document], "", 32)[0]
    assert torch.allclose(
        torch.tensor(model.get_text_embedding(document)), document_embedding, atol=1e-5
    )
