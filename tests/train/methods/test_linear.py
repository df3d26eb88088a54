"""Method `adapter_linear`: W q + b started at the identity, saved with LlamaIndex's
`LinearLayer` parameter names and constructor arguments."""

from __future__ import annotations

import json

import torch

from embedtune.train.methods.adapters import AdapterModel
from embedtune.train.methods.base import get_method, load_tuned, save_tuned
from embedtune.train.methods.linear import LinearAdapter, LinearConfig, LinearMethod
from tests.helpers import cfg, composed


def test_train_adapter_linear_cpu_composes_into_the_linear_method():
    # Named here, not through `cfg`, which picks it whenever no `train=` override is given.
    train_cfg = composed("experiment=cpu", "train=adapter_linear_cpu").train
    assert isinstance(train_cfg, LinearConfig)
    assert train_cfg.method == "adapter_linear"
    assert isinstance(get_method(train_cfg.method), LinearMethod)


def test_untrained_adapter_is_the_identity():
    x = torch.randn(5, 7)
    assert torch.equal(LinearAdapter(7)(x), x)
    assert torch.equal(LinearAdapter(7, bias=False)(x), x)


def test_build_and_rebuild():
    method = LinearMethod()
    assert method.build(cfg("train", bias=False), 6).linear.bias is None
    adapter = method.build(cfg("train", bias=True), 6)
    assert adapter.linear.weight.shape == (6, 6) and adapter.linear.bias is not None
    assert adapter.config() == {"in_features": 6, "out_features": 6, "bias": True}
    again = method.rebuild(adapter.config())
    assert again.config() == adapter.config()


def test_save_writes_safetensors_with_llamaindex_names(tmp_path):
    torch.manual_seed(0)
    adapter = LinearAdapter(16)
    torch.nn.init.normal_(adapter.linear.weight)
    folder = tmp_path / "adapter"
    save_tuned(AdapterModel("adapter_linear", adapter), folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((folder / "config.json").read_text()) == {
        "method": "adapter_linear",
        "in_features": 16,
        "out_features": 16,
        "bias": True,
    }
    raw = (folder / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])  # safetensors: a JSON header, then raw tensors
    assert set(header) - {"__metadata__"} == {"linear.weight", "linear.bias"}
    assert not raw.startswith((b"PK", b"\x80"))  # neither torch.save's zip nor a pickle
    loaded = load_tuned(folder)
    assert isinstance(loaded, AdapterModel) and isinstance(loaded.adapter, LinearAdapter)
    for name, value in adapter.state_dict().items():
        assert torch.equal(loaded.adapter.state_dict()[name], value)


def test_llamaindex_linear_layer_loads_the_weights(tmp_path):
    from llama_index.embeddings.adapter.utils import LinearLayer
    from safetensors.torch import load_file

    torch.manual_seed(1)
    adapter = LinearAdapter(8)
    torch.nn.init.normal_(adapter.linear.weight)
    torch.nn.init.normal_(adapter.linear.bias)
    save_tuned(AdapterModel("adapter_linear", adapter), tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config.pop("method") == "adapter_linear"
    theirs = LinearLayer(**config)
    theirs.load_state_dict(load_file(str(tmp_path / "m" / "model.safetensors")))  # strict
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.allclose(theirs(x), adapter(x), atol=1e-6)


def test_save_and_load_without_bias(tmp_path):
    adapter = LinearAdapter(4, bias=False)
    with torch.no_grad():
        adapter.linear.weight.mul_(2.0)
    save_tuned(AdapterModel("adapter_linear", adapter), tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["bias"] is False
    loaded = load_tuned(tmp_path / "m").adapter
    assert loaded.linear.bias is None
    assert torch.equal(loaded.linear.weight, 2.0 * torch.eye(4))
