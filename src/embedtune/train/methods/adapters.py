"""What the adapter methods share: their config, the tuned model, training, saving, loading.

An adapter maps base query embeddings; chunks keep their base embeddings, so an existing index
need not be rebuilt. Saved as `model.safetensors` plus `config.json` (the method and the
constructor arguments, with LlamaIndex's parameter names).
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from embedtune import io
from embedtune.config import EmbedConfig
from embedtune.train.methods.adapter_training import train_adapter
from embedtune.train.methods.base import (
    Method,
    TrainConfig,
    TrainingInputs,
    TrainingLog,
    saved_config,
)


class AdapterConfig(TrainConfig):
    optimizer: Literal["adamw", "adam", "sgd"]
    bias: bool  # learn the biases as well as the weights
    scale: float = Field(gt=0)  # inverse temperature of cosine scores in the ranking loss
    hard_negatives: int = Field(ge=0)  # mined negatives per question in the loss (0: in-batch)
    identity_weight: float = Field(ge=0)  # pull of the adapted queries towards the base ones


class AdapterModel:
    """Base embeddings, with the adapter applied to queries only."""

    def __init__(self, method: str, adapter: nn.Module):
        self.method = method
        self.adapter = adapter.eval()

    def encode_queries(self, texts: list[str], base: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.adapter(base)

    def encode_corpus(self, texts: list[str], base: torch.Tensor) -> torch.Tensor:
        return base

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous() for k, v in self.adapter.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        io.write_json(folder / "config.json", {"method": self.method, **self.adapter.config()})


class AdapterMethod(Method):
    """An adapter method is its network: how to build it from its config or from config.json."""

    name: str

    @abstractmethod
    def build(self, cfg: AdapterConfig, dim: int) -> nn.Module: ...

    @abstractmethod
    def rebuild(self, saved: dict) -> nn.Module:
        """The network described by a saved config.json (weights loaded afterwards)."""

    def train(
        self, inputs: TrainingInputs, cfg: AdapterConfig, seed: int, log: TrainingLog
    ) -> AdapterModel:
        emb = inputs.embeddings()
        torch.manual_seed(seed)  # seeds initialisation (the batches have their own generator)
        adapter = self.build(cfg, emb.queries.shape[1])
        split = inputs.question_split(cfg, seed)
        trained = train_adapter(
            adapter, emb, inputs.dataset, cfg, seed, log, split, inputs.negatives
        )
        return AdapterModel(self.name, trained)

    def load(self, folder: Path, embed: EmbedConfig | None = None) -> AdapterModel:
        adapter = self.rebuild(saved_config(folder))
        path = Path(folder) / "model.safetensors"
        state, _ = io.read_safetensors(path, stage="train")
        with io.reading(path, RuntimeError, stage="train"):  # weights unlike config.json's
            adapter.load_state_dict(state)
        return AdapterModel(self.name, adapter)
