"""Stage `train`: a linear adapter on the frozen base model, trained on cached embeddings.

Usage: python -m embedtune.train   (reads params.yaml; run by `dvc repro`)

The adapter maps query embeddings only (documents keep their base embeddings, so an existing
index need not be rebuilt), as LlamaIndex's `LinearAdapterEmbeddingModel` does. Loss: multiple
negatives ranking over the distinct chunks of a shuffled batch, so two questions of one chunk are
never scored as each other's negatives. Saves models/tuned/{model.safetensors,config.json}.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from embedtune import io
from embedtune.config import TrainConfig, load_params
from embedtune.embed import SplitEmbeddings, load_dataset, load_embeddings
from embedtune.errors import EmbedtuneError, run_stage


class LinearAdapter(nn.Module):
    """`W q + b`, started at the identity so the untrained adapter is the base model.

    Parameter names match LlamaIndex's `LinearLayer`, so its `AdapterEmbeddingModel` can load them.
    """

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
            "method": "adapter_linear",
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias,
        }


def training_pairs(emb: SplitEmbeddings, dataset: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (query, positive chunk) for every labelled query of the split."""
    corpus_row = {cid: i for i, cid in enumerate(emb.corpus_ids)}
    q_rows, d_rows = [], []
    for qi, qid in enumerate(emb.query_ids):
        for cid in dataset["relevant_docs"].get(qid, []):
            q_rows.append(qi)
            d_rows.append(corpus_row[cid])
    return torch.tensor(q_rows, dtype=torch.long), torch.tensor(d_rows, dtype=torch.long)


def ranking_loss(
    adapter: nn.Module,
    queries: torch.Tensor,
    corpus: torch.Tensor,
    doc_rows: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Cross-entropy of each query's positive against the batch's other distinct chunks."""
    candidates, target = torch.unique(doc_rows, return_inverse=True)
    q = F.normalize(adapter(queries), dim=-1)
    scores = scale * q @ corpus[candidates].T
    return F.cross_entropy(scores, target)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_adapter(
    emb: SplitEmbeddings,
    dataset: dict,
    cfg: TrainConfig,
    seed: int,
    log_step: Callable[[int, float], None] = lambda step, loss: None,
) -> LinearAdapter:
    """Train a linear adapter on cached embeddings; seeded, shuffled every epoch.

    Args:
        emb: base-model embeddings of the training split.
        dataset: the split's `EmbeddingQAFinetuneDataset` dict (for `relevant_docs`).
        cfg: optimiser, learning rate, epochs, batch size, loss scale.
        seed: seeds initialisation and shuffling.
        log_step: called with (step, loss) after every optimiser step.
    """
    q_rows, d_rows = training_pairs(emb, dataset)
    if len(q_rows) < 2:
        raise EmbedtuneError(
            f"training split has {len(q_rows)} labelled queries, need at least 2 "
            "(more documents in data.train, or check metrics/synth.json)"
        )
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    adapter = LinearAdapter(emb.queries.shape[1], bias=cfg.bias)
    optimizer = make_optimizer(adapter.parameters(), cfg)
    step = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(q_rows), generator=generator)
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            if len(batch) < 2:
                continue
            loss = ranking_loss(
                adapter, emb.queries[q_rows[batch]], emb.corpus, d_rows[batch], cfg.scale
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            log_step(step, loss.item())
    return adapter.eval()


def save_adapter(adapter: LinearAdapter, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in adapter.state_dict().items()}
    with io.atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    io.write_json(folder / "config.json", adapter.config())


def load_adapter(folder: Path) -> LinearAdapter:
    from safetensors.torch import load_file

    config_path = folder / "config.json"
    if not config_path.is_file():
        raise EmbedtuneError(f"{config_path} not found: run `dvc repro train` first")
    config = json.loads(config_path.read_text())
    adapter = LinearAdapter(config["in_features"], bias=config["bias"])
    adapter.load_state_dict(load_file(str(folder / "model.safetensors")))
    return adapter.eval()


def main() -> None:
    from dvclive import Live

    params = load_params()
    emb = load_embeddings(io.EMBEDDINGS_DIR / "train.safetensors")
    with Live(str(io.METRICS_DIR / "train"), dvcyaml=False, save_dvc_exp=False) as live:

        def log_step(step: int, loss: float) -> None:
            live.log_metric("loss", loss)
            live.next_step()

        adapter = train_adapter(emb, load_dataset("train"), params.train, params.seed, log_step)
    save_adapter(adapter, io.TUNED_DIR)
    print(f"adapter {adapter.in_features}x{adapter.out_features} saved to {io.TUNED_DIR}")


if __name__ == "__main__":
    run_stage("train", main)
