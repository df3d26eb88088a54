"""Method `nudge`: move the stored chunk embeddings towards their training questions (NUDGE,
arXiv 2409.02343); the model itself is not changed.

Usage: dvc exp run -S experiment=cpu -S train=nudge

For each training chunk d (a unit base embedding) let g be the sum of the embeddings of the
training questions that ask about it. With step size gamma:

- variant `m` (NUDGE-M): d' = d + gamma * g / |g|, the maximiser of g . d' under |d' - d| <= gamma
  (not re-normalised; the ranking is by cosine, so only its direction counts there).
- variant `n` (NUDGE-N): the maximiser of g . d' under |d' - d| <= gamma and |d'| = 1. When the
  unit vector g / |g| is within gamma of d it is d' itself; otherwise d' lies on the edge of the
  reachable cap, in the plane of d and g: d' = c d + sqrt(1 - c^2) u with c = 1 - gamma^2 / 2 and
  u the unit part of g orthogonal to d. (The reference code bounds |d' - d|^2 by its gamma and
  leaves chunks with g . d < 0 where they are; here gamma is a distance for both variants.)

Chunks without training questions keep their base embedding: only training questions move
embeddings. The held-out slice is `train.holdout_fraction` of the questions (not chunks: a
chunk's held-out question scores how far its other questions moved it, which is NUDGE's use).
gamma is the first of `train.gammas` with the best held-out MRR@10 if it beats gamma 0 (the
base model, logged as epoch 0; grid point i is epoch i) beyond the slice's noise
(`train.selection_confidence`), else 0; the last gamma when nothing is held out. Chunks with
the same text (whitespace aside) move as one.

The tuned model does not change unseen documents: queries keep their base embeddings, and a
chunk gets its moved embedding only when its text is that of a moved training chunk. Saved as
`model.safetensors` (tensor `embeddings`, the texts' sha256 keys as JSON in its metadata) plus
`config.json` with the method, variant and gamma.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from embedtune import io
from embedtune.config import EmbedConfig
from embedtune.embeddings import SplitEmbeddings
from embedtune.errors import EmbedtuneError
from embedtune.retrieval.selection import (
    HELDOUT_NAME,
    heldout_per_query,
    select_epoch,
)
from embedtune.train.methods.base import (
    METHODS,
    Method,
    TrainConfig,
    TrainingInputs,
    TrainingLog,
    saved_config,
)

WEIGHTS, KEYS = "model.safetensors", "keys"


class NudgeConfig(TrainConfig):
    method: Literal["nudge"]
    variant: Literal["m", "n"]  # m: |delta| <= gamma; n: the same, kept on the unit sphere
    gammas: list[Annotated[float, Field(ge=0)]]  # step sizes to try; held-out MRR@10 picks one

    @field_validator("gammas")
    @classmethod
    def _from_zero_upwards(cls, gammas: list[float]) -> list[float]:
        if not gammas or gammas[0] != 0:
            raise ValueError("must start with 0.0 (the base embeddings, epoch 0)")
        if any(b <= a for a, b in zip(gammas, gammas[1:], strict=False)):
            raise ValueError("must be strictly increasing")
        return gammas


def text_key(text: str) -> str:
    """sha256 of the text with whitespace runs collapsed to one space and the ends stripped."""
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


def nudge(base: torch.Tensor, sums: torch.Tensor, gamma: float, variant: str) -> torch.Tensor:
    """Rows of `base` (chunk embeddings) moved by at most `gamma` towards the rows of `sums`
    (the sums of their training questions); rows with a zero sum are returned as they are."""
    if gamma == 0:
        return base
    d = F.normalize(base.float(), dim=-1)
    g = F.normalize(sums.float(), dim=-1)
    moved = d + gamma * g if variant == "m" else on_sphere(d, g, gamma)
    return torch.where(sums.norm(dim=-1, keepdim=True) > 0, moved, base.float())


def on_sphere(d: torch.Tensor, g: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per row, the unit vector x within `gamma` of the unit vector d that is closest to the
    unit vector g (so maximises g . x): g itself when it is near enough, else the edge point."""
    cos = (g * d).sum(dim=-1, keepdim=True)
    cap = 1 - gamma**2 / 2  # |x - d| <= gamma on the unit sphere is x . d >= cap
    across = g - cos * d
    edge = cap * d + math.sqrt(max(0.0, 1 - cap**2)) * F.normalize(across, dim=-1)
    # g opposite to d and out of reach: every edge point is as good, so d stays
    edge = torch.where(across.norm(dim=-1, keepdim=True) > 1e-6, edge, d)
    return torch.where(cos >= cap, g, edge)


def question_sums(
    emb: SplitEmbeddings, relevant: dict[str, list[str]], query_ids: list[str], keys: list[str]
) -> torch.Tensor:
    """Per corpus row, the sum of the embeddings of the training questions `query_ids` that ask
    about its text (about any row with the same text key)."""
    text_index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    row_text = [text_index[k] for k in keys]
    text_of = {cid: row_text[i] for i, cid in enumerate(emb.corpus_ids)}
    query_row = {qid: i for i, qid in enumerate(emb.query_ids)}
    pairs = [(query_row[q], text_of[c]) for q in query_ids for c in relevant.get(q, [])]
    sums = torch.zeros(len(text_index), emb.corpus.shape[1])
    if pairs:
        q_rows, t_rows = (torch.tensor(x, dtype=torch.long) for x in zip(*pairs, strict=True))
        sums.index_add_(0, t_rows, emb.queries[q_rows].float())
    return sums[torch.tensor(row_text, dtype=torch.long)]


class NudgeModel:
    """Base query embeddings; moved embeddings for the chunks whose text it was tuned on."""

    method = "nudge"

    def __init__(self, variant: str, gamma: float, keys: list[str], embeddings: torch.Tensor):
        if len(keys) != len(embeddings):
            raise EmbedtuneError(f"nudge: {len(keys)} text keys for {len(embeddings)} embeddings")
        self.variant, self.gamma = variant, gamma
        self.keys, self.embeddings = list(keys), embeddings
        self._row = {k: i for i, k in enumerate(self.keys)}

    def encode_queries(self, texts: list[str], base: torch.Tensor) -> torch.Tensor:
        return base

    def encode_corpus(self, texts: list[str], base: torch.Tensor) -> torch.Tensor:
        found = [(i, self._row.get(text_key(t))) for i, t in enumerate(texts)]
        found = [(i, row) for i, row in found if row is not None]
        if not found:
            return base
        rows, stored = (list(x) for x in zip(*found, strict=True))
        out = base.clone()
        out[rows] = self.embeddings[stored].to(device=base.device, dtype=base.dtype)
        return out

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        tensors = {"embeddings": self.embeddings.float().contiguous()}
        save_file(tensors, str(folder / WEIGHTS), metadata={KEYS: json.dumps(self.keys)})
        config = {"method": self.method, "variant": self.variant, "gamma": self.gamma}
        io.write_json(folder / "config.json", config)


def nudged_model(
    emb: SplitEmbeddings, keys: list[str], sums: torch.Tensor, gamma: float, variant: str
) -> NudgeModel:
    """The model storing the moved embedding of each text with training questions (none at
    gamma 0); the first row of a text stands for its duplicates."""
    first = {}
    for row, key in enumerate(keys):
        first.setdefault(key, row)
    rows = [r for r in first.values() if gamma > 0 and bool(sums[r].any())]
    moved = nudge(emb.corpus[rows], sums[rows], gamma, variant)
    return NudgeModel(variant, gamma, [keys[r] for r in rows], moved.float())


def choose_gamma(
    emb: SplitEmbeddings,
    relevant: dict[str, list[str]],
    sums: torch.Tensor,
    held_ids: list[str],
    cfg: NudgeConfig,
    seed: int,
    log: TrainingLog,
) -> float:
    """The first gamma > 0 of the grid with the best held-out MRR@10 if it beats gamma 0 (the
    base model) beyond the slice's noise, else 0; the last gamma when nothing is held out.
    Grid point i is logged as epoch i; `train.patience` stops the scan early."""
    if not held_ids:
        return cfg.gammas[-1]
    query_row = {qid: i for i, qid in enumerate(emb.query_ids)}
    held_queries = emb.queries[[query_row[q] for q in held_ids]]
    untrained, best, record, stale = None, None, float("-inf"), 0
    for i, gamma in enumerate(cfg.gammas):
        corpus = nudge(emb.corpus, sums, gamma, cfg.variant)
        values = heldout_per_query(held_queries, corpus, held_ids, emb.corpus_ids, relevant)
        log.epoch(i, i, {HELDOUT_NAME: float(values.mean())})
        if i == 0:
            untrained = values
        elif best is None or values.mean() > best[2].mean():
            best = (i, gamma, values)
        stale = 0 if values.mean() > record else stale + 1
        record = max(record, float(values.mean()))
        if cfg.patience and stale >= cfg.patience:
            break
    if best is None:
        return 0.0
    return best[1] if select_epoch(untrained, best[0], best[2], cfg, seed, log) else 0.0


@METHODS.register("nudge")
class NudgeMethod(Method):
    Config = NudgeConfig
    heldout_unit = "question"  # it changes only the chunks it was tuned on

    def train(
        self, inputs: TrainingInputs, cfg: NudgeConfig, seed: int, log: TrainingLog
    ) -> NudgeModel:
        # held out by question: their chunks move with the other questions, as in real use
        train_ids, held_ids = inputs.question_split(cfg, seed, self.heldout_unit)
        emb, dataset = inputs.embeddings(), inputs.dataset
        relevant = dataset["relevant_docs"]
        if not any(relevant.get(q) for q in train_ids):
            raise EmbedtuneError(
                "training split has no labelled training questions to move chunks towards "
                "(more documents in data.train, a smaller train.holdout_fraction, "
                "or check metrics/synth.json)"
            )
        keys = [text_key(dataset["corpus"][cid]) for cid in emb.corpus_ids]
        sums = question_sums(emb, relevant, train_ids, keys)
        gamma = choose_gamma(emb, relevant, sums, held_ids, cfg, seed, log)
        return nudged_model(emb, keys, sums, gamma, cfg.variant)

    def load(self, folder: Path, embed: EmbedConfig | None = None) -> NudgeModel:
        saved = saved_config(folder)
        path = Path(folder) / WEIGHTS
        tensors, metadata = io.read_safetensors(path, stage="train")
        if KEYS not in metadata:
            raise EmbedtuneError(f"{path}: no text keys in its metadata")
        with io.reading(path, KeyError, stage="train"):
            keys, embeddings = json.loads(metadata[KEYS]), tensors["embeddings"]
        return NudgeModel(saved["variant"], saved["gamma"], keys, embeddings)
