"""Method `adapter_2layer`: q + a * MLP(q), a learned scalar a started at 0, with LlamaIndex's
`TwoLayerNN` parameter names and constructor arguments."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from embedtune.train.methods.adapters import AdapterModel
from embedtune.train.methods.base import (
    TrainingInputs,
    TrainingLog,
    get_method,
    load_tuned,
    save_tuned,
)
from embedtune.train.methods.two_layer import TwoLayerAdapter, TwoLayerConfig, TwoLayerMethod
from tests.helpers import cfg
from tests.helpers.methods import hit_rate_at_1, synthetic


@pytest.fixture(scope="module")
def data():
    return synthetic()


def two_layer(**updates) -> TwoLayerConfig:
    return cfg("train", "train=adapter_2layer", **updates)


def train(emb, dataset, train_cfg, seed: int) -> TwoLayerAdapter:
    inputs = TrainingInputs(dataset, cfg("embed"), _embeddings=emb)
    return get_method(train_cfg.method).train(inputs, train_cfg, seed, TrainingLog()).adapter


def test_the_group_picks_the_two_layer_method():
    assert isinstance(two_layer(), TwoLayerConfig)
    assert isinstance(get_method("adapter_2layer"), TwoLayerMethod)


def test_untrained_adapter_is_the_identity():
    torch.manual_seed(0)
    x = torch.randn(3, 4)
    assert torch.equal(TwoLayerAdapter(4, 8)(x), x)
    assert torch.equal(TwoLayerAdapter(4, 8, bias=False)(x), x)


def test_without_residual_it_is_the_mlp():
    torch.manual_seed(0)
    adapter = TwoLayerAdapter(4, 8, residual=False)
    x = torch.randn(3, 4)
    assert torch.equal(adapter(x), adapter.linear2(F.relu(adapter.linear1(x))))
    assert not adapter.residual_weight.requires_grad


def test_two_layer_adapter_improves_unseen_questions(data):
    (emb, dataset), (test_emb, test_dataset) = data
    train_cfg = two_layer(
        hidden_size=64, lr=0.01, epochs=30, batch_size=16, holdout_fraction=0.1, patience=0
    )
    adapter = train(emb, dataset, train_cfg, seed=0)
    assert isinstance(adapter, TwoLayerAdapter) and adapter.hidden_features == 64
    torch.manual_seed(0)
    base = hit_rate_at_1(TwoLayerAdapter(16, 64), test_emb, test_dataset)
    assert hit_rate_at_1(adapter, test_emb, test_dataset) > base + 0.3


def test_without_bias_the_biases_stay_zero(data):
    (emb, dataset), _ = data
    train_cfg = two_layer(hidden_size=8, bias=False, lr=0.01, epochs=2, batch_size=32)
    train_cfg = train_cfg.model_copy(update={"holdout_fraction": 0.0, "patience": 0})  # last epoch
    adapter = train(emb, dataset, train_cfg, seed=0)
    assert not adapter.linear1.bias.any() and not adapter.linear2.bias.any()
    assert adapter.residual_weight.item() != 0.0


def test_training_is_seeded(data):
    (emb, dataset), _ = data
    train_cfg = two_layer(hidden_size=8, lr=0.01, epochs=1, batch_size=32, patience=0)
    train_cfg = train_cfg.model_copy(update={"holdout_fraction": 0.0})
    first, again = train(emb, dataset, train_cfg, 4), train(emb, dataset, train_cfg, 4)
    other = train(emb, dataset, train_cfg, 5)
    assert torch.equal(first.linear1.weight, again.linear1.weight)
    assert not torch.equal(first.linear1.weight, other.linear1.weight)  # initialisation too


@pytest.mark.parametrize(("bias", "residual"), [(True, True), (False, True), (True, False)])
def test_save_load_and_llamaindex_two_layer_nn(tmp_path, bias, residual):
    from llama_index.embeddings.adapter.utils import TwoLayerNN
    from safetensors.torch import load_file

    torch.manual_seed(0)
    adapter = TwoLayerAdapter(6, 10, bias=bias, residual=residual)
    with torch.no_grad():
        adapter.residual_weight.fill_(0.5)
    save_tuned(AdapterModel("adapter_2layer", adapter), tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config == {
        "method": "adapter_2layer",
        "in_features": 6,
        "hidden_features": 10,
        "out_features": 6,
        "bias": bias,
        "activation_fn_str": "relu",
        "add_residual": residual,
    }
    x = torch.randn(4, 6)
    loaded = load_tuned(tmp_path / "m").adapter
    assert isinstance(loaded, TwoLayerAdapter)
    assert torch.equal(loaded(x), adapter(x))
    config.pop("method")
    theirs = TwoLayerNN(**config)
    theirs.load_state_dict(load_file(str(tmp_path / "m" / "model.safetensors")))  # strict
    with torch.no_grad():
        assert torch.allclose(theirs(x), adapter(x), atol=1e-6)
