"""Method `adapter_linear`: `W q + b` on the base query embeddings (the reference recipe).

Started at the identity, so the untrained adapter is the base model. Parameter names match
LlamaIndex's `LinearLayer`, so its `AdapterEmbeddingModel` can load them.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from embedtune.train.methods.adapters import AdapterConfig, AdapterMethod
from embedtune.train.methods.base import METHODS


class LinearConfig(AdapterConfig):
    method: Literal["adapter_linear"]


class LinearAdapter(nn.Module):
    def __init__(self, dim: int, bias: bool = True):
        super().__init__()
        self.in_features = self.out_features = dim
        self.bias = bias
        self.linear = nn.Linear(dim, dim, bias=bias)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(dim))
            if bias:
                self.linear.bias.zero_()

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.linear(embeddings)

    def config(self) -> dict:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias,
        }


@METHODS.register("adapter_linear")
class LinearMethod(AdapterMethod):
    name = "adapter_linear"
    Config = LinearConfig

    def build(self, cfg: LinearConfig, dim: int) -> LinearAdapter:
        return LinearAdapter(dim, bias=cfg.bias)

    def rebuild(self, saved: dict) -> LinearAdapter:
        return LinearAdapter(saved["in_features"], bias=saved["bias"])
