"""Inputs of the eval tests: a small split with the metrics to score it on, tuned models whose
outcome is known, and what the stages before `eval` leave in its working directory."""

from __future__ import annotations

import torch
import yaml

from embedtune import io
from embedtune.train.methods.adapters import AdapterModel
from embedtune.train.methods.linear import LinearAdapter
from tests.helpers import cfg

SPEC = {"hit_rate": [1, 3, 5, 10], "recall": [1, 3, 5, 10], "mrr": [10], "ndcg": [10]}
DATASET = {
    "queries": {
        "q-for": "How does a for loop go over the items of a list?",
        "q-raise": "How do I signal an error with an exception?",
        "q-import": "How do I load another module?",
        "q-none": "What is the meaning of life?",
    },
    "corpus": {
        "c-raise": "The raise statement raises an exception, optionally with a cause.",
        "c-for": "The for statement iterates over the elements of a sequence such as a list.",
        "c-import": "The import statement finds a module, loads it and binds it to a name.",
        "c-pass": "pass is a null operation; nothing happens when it is executed.",
    },
    "relevant_docs": {
        "q-for": ["c-for"],
        "q-raise": ["c-raise"],
        "q-import": ["c-import", "c-pass"],
    },
    "mode": "text",
}


def identity() -> AdapterModel:
    return AdapterModel("adapter_linear", LinearAdapter(384))


# --- the `eval` stage's working directory (fixture `eval_workdir`) -------------------------

TRAIN = {
    "queries": {
        "q-with": "How do I make sure a file is closed after use?",
        "q-del": "How do I remove a variable?",
        "q-yield": "How does a generator produce values?",
    },
    "corpus": {
        "c-with": "The with statement wraps a block with methods of a context manager.",
        "c-del": "Deletion of a name removes its binding from the namespace.",
        "c-yield": "The yield expression is used when defining a generator function.",
    },
    "relevant_docs": {"q-with": ["c-with"], "q-del": ["c-del"], "q-yield": ["c-yield"]},
    "mode": "text",
}
METRICS = {"hit_rate": [3, 1], "mrr": [10], "ndcg": [10]}


def scrambling_adapter() -> AdapterModel:
    """A linear adapter with seeded random weights: the tuned model differs from the base."""
    adapter = LinearAdapter(384)
    with torch.no_grad():
        adapter.linear.weight.copy_(
            torch.randn(384, 384, generator=torch.Generator().manual_seed(0))
        )
    return AdapterModel("adapter_linear", adapter)


def write_params(folder, **eval_updates) -> None:
    params = {
        "seed": 0,
        "embed": cfg("embed").model_dump(),
        "retrieve": cfg("retrieve").model_dump(),
        "eval": cfg("eval", **{"metrics": METRICS, "bootstrap": 50, **eval_updates}).model_dump(),
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


SPLITS = {"train": TRAIN, "validation": DATASET}
SHIPPED = "tuned+bm25:rrf60"  # what the `select` stage chose, in these tests


def ship(name: str) -> None:
    io.write_json(io.RETRIEVER_DIR / "retriever.json", {"retriever": name})
