"""Method `adapter_2layer`: `q + a * (W2 relu(W1 q + b1) + b2)` with a learned scalar `a` that
starts at 0, so the untrained residual adapter is the base model.

Parameters and their names are those of LlamaIndex's `TwoLayerNN` (`linear1`, `linear2`,
`residual_weight`). LlamaIndex always keeps both biases; with `bias: false` ours are there too,
but zero and frozen. Without `residual` the output is the MLP alone (`residual_weight` is kept,
unused, for the names).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from embedtune.train.methods.adapters import AdapterConfig, AdapterMethod
from embedtune.train.methods.base import METHODS


class TwoLayerConfig(AdapterConfig):
    method: Literal["adapter_2layer"]
    hidden_size: int = Field(gt=0)  # width of the hidden layer
    residual: bool  # output = input + a * MLP(input)


class TwoLayerAdapter(nn.Module):
    def __init__(self, dim: int, hidden_size: int, bias: bool = True, residual: bool = True):
        super().__init__()
        self.in_features = self.out_features = dim
        self.hidden_features = hidden_size
        self.bias = bias
        self.add_residual = residual
        self.linear1 = nn.Linear(dim, hidden_size, bias=True)
        self.linear2 = nn.Linear(hidden_size, dim, bias=True)
        self.residual_weight = nn.Parameter(torch.zeros(1), requires_grad=residual)
        if not bias:
            for layer in (self.linear1, self.linear2):
                nn.init.zeros_(layer.bias)
                layer.bias.requires_grad_(False)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        out = self.linear2(F.relu(self.linear1(embeddings)))
        if self.add_residual:
            out = self.residual_weight * out + embeddings
        return out

    def config(self) -> dict:
        return {
            "in_features": self.in_features,
            "hidden_features": self.hidden_features,
            "out_features": self.out_features,
            "bias": self.bias,
            "activation_fn_str": "relu",
            "add_residual": self.add_residual,
        }


@METHODS.register("adapter_2layer")
class TwoLayerMethod(AdapterMethod):
    name = "adapter_2layer"
    Config = TwoLayerConfig

    def build(self, cfg: TwoLayerConfig, dim: int) -> TwoLayerAdapter:
        return TwoLayerAdapter(dim, cfg.hidden_size, bias=cfg.bias, residual=cfg.residual)

    def rebuild(self, saved: dict) -> TwoLayerAdapter:
        return TwoLayerAdapter(
            saved["in_features"],
            saved["hidden_features"],
            bias=saved["bias"],
            residual=saved["add_residual"],
        )
