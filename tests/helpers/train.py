"""The `train` stage's folder as the stages before it leave it: params.yaml, the training split."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from embedtune.compose import compose
from embedtune.embeddings import save_embeddings
from embedtune.io import write_json
from embedtune.mine.mined import MINED_FILE, Mined
from tests.helpers import ROOT


def stage_folder(folder: Path, overrides: list[str], **train) -> Path:
    """params.yaml composed with `overrides`, `train` keys edited as by `-S train.x=...`."""
    params = folder / "params.yaml"
    if not any(o.startswith("train=") for o in overrides):  # the adapter unless told
        overrides = ["train=adapter_linear_cpu", *overrides]
    compose(["experiment=cpu", *overrides], conf_dir=ROOT / "conf", output=params)
    raw = yaml.safe_load(params.read_text())
    raw["train"].update(train)
    params.write_text(yaml.safe_dump(raw))
    return folder


def write_split(folder: Path, dataset: dict, emb=None, mined: Mined | None = None) -> None:
    """The training split, its embeddings and what `mine` wrote (by default: every question
    trains, without negatives)."""
    (folder / "data" / "qa").mkdir(parents=True)
    (folder / "data" / "qa" / "train.json").write_text(json.dumps(dataset))
    if emb is not None:
        save_embeddings(folder / "data" / "embeddings" / "train.safetensors", emb)
    mined = mined or Mined([], {}, {q: [] for q in dataset["queries"]})
    write_json(folder / MINED_FILE, mined.as_dict())
