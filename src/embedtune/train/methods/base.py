"""What a training method is, and the registry that finds one by `train.method`.

To add a method: one module in this package with

    class MyConfig(TrainConfig):            # the method's own keys
        method: Literal["my_method"]
        rank: int

    @METHODS.register("my_method")
    class MyMethod(Method):
        Config = MyConfig
        def train(self, inputs, cfg, seed, log) -> TunedModel: ...
        def load(self, folder, embed) -> TunedModel: ...

plus `conf/train/my_method.yaml` with `method: my_method` and every key. `train` and `eval`
find it by name; the tuned model's `save` writes `config.json` with `"method": "my_method"` so
`eval` can load it. `tests/train/methods/test_registry.py` registers a toy method this way.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from embedtune import io
from embedtune.config import EmbedConfig, Section
from embedtune.embeddings import SplitEmbeddings, load_embeddings, load_encoder
from embedtune.errors import EmbedtuneError
from embedtune.mine.mined import Mined, load_mined
from embedtune.registry import Registry
from embedtune.retrieval.selection import heldout_split
from embedtune.retrieval.tuned import TunedModel

METHODS: Registry[type[Method]] = Registry("train.method", "embedtune.train.methods")


class TrainConfig(Section):
    """Keys of every method."""

    method: str
    lr: float = Field(gt=0)  # learning rate
    weight_decay: float = Field(ge=0)
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=1)  # questions per step; > 1 for in-batch negatives
    # model selection on a held-out slice of the TRAINING questions (never validation)
    holdout_fraction: float = Field(ge=0, lt=1)
    holdout_min_questions: int = Field(ge=0)  # grow the held-out slice to this many questions
    patience: int = Field(ge=0)  # epochs without held-out gain before stopping (0 = run all)
    # training is kept only if its held-out gain's interval at this confidence is above 0
    # (0: if its mean gain is; None: always, the untrained model is no candidate)
    selection_confidence: float | None = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def _patience_needs_heldout(self) -> TrainConfig:
        if self.patience and not self.holdout_fraction:
            raise ValueError(
                "train.patience needs held-out questions: set train.holdout_fraction > 0"
            )
        return self


@dataclass
class TrainingLog:
    """Where a method reports progress: (step, loss) per optimiser step, (epoch, step,
    {"mrr@10": value}) for the held-out questions after every epoch (epoch 0: untrained), and
    the selection: (best trained epoch, epoch kept (0: untrained), held-out gain {diff, low,
    high} of that trained epoch over the untrained model)."""

    step: Callable[[int, float], None] = lambda step, loss: None
    epoch: Callable[[int, int, dict[str, float]], None] = lambda epoch, step, metrics: None
    selected: Callable[[int, int, dict], None] = lambda best, kept, gain: None


@dataclass
class TrainingInputs:
    """The training split, with its base embeddings and base model loaded on first use."""

    dataset: dict  # the split's EmbeddingQAFinetuneDataset dict
    embed: EmbedConfig
    embeddings_path: Path | None = None
    mined: Mined | None = None  # question roles and hard negatives (stage `mine`)
    _embeddings: SplitEmbeddings | None = field(default=None, repr=False)
    _encoder: Any = field(default=None, repr=False)

    @classmethod
    def stored(cls, embed: EmbedConfig) -> TrainingInputs:
        """The training split as the pipeline stored it: `synth`'s questions, `embed`'s base
        embeddings (read on first use) and `mine`'s question roles and hard negatives."""
        return cls(
            io.load_qa("train"), embed, io.EMBEDDINGS_DIR / "train.safetensors", load_mined()
        )

    def embeddings(self) -> SplitEmbeddings:
        if self._embeddings is None:
            if self.embeddings_path is None:
                raise ValueError("TrainingInputs has neither embeddings nor embeddings_path")
            self._embeddings = load_embeddings(self.embeddings_path)
        return self._embeddings

    def question_split(
        self, cfg: TrainConfig, seed: int, unit: Literal["chunk", "question"] = "chunk"
    ) -> tuple[list[str], list[str]]:
        """(training, held-out) question ids, held out by `unit` (see `heldout_split`). The
        seen-corpus questions are in neither; the held-out slice is not round-trip filtered
        (that would favour the base model)."""
        ids = list(self.dataset["queries"])
        if self.mined is not None:
            aside = set(self.mined.seen_corpus)
            ids = [q for q in ids if q not in aside]
        train, held = heldout_split(
            self.dataset, cfg.holdout_fraction, seed, cfg.holdout_min_questions, ids, unit
        )
        if self.mined is not None:
            train = self.mined.training(train)
        return train, held

    def negatives(self, query_id: str) -> list[str]:
        """The mined hard negatives (chunk ids, hardest first) of a training question."""
        return [] if self.mined is None else self.mined.negatives.get(query_id, [])

    def encoder(self):
        """The base model in float32, to be trained in place."""
        if self._encoder is None:
            self._encoder = load_encoder(self.embed, for_training=True)
        return self._encoder


class Method(ABC):
    Config: ClassVar[type[TrainConfig]]
    # how its held-out slice is drawn (see `heldout_split`); `select` draws the same one
    heldout_unit: ClassVar[Literal["chunk", "question"]] = "chunk"

    @abstractmethod
    def train(
        self, inputs: TrainingInputs, cfg: TrainConfig, seed: int, log: TrainingLog
    ) -> TunedModel: ...

    @abstractmethod
    def load(self, folder: Path, embed: EmbedConfig | None) -> TunedModel: ...


def diverged(cfg: TrainConfig, step: int, what: str) -> EmbedtuneError:
    """The error that stops a diverged training: a NaN model scores every gold chunk first, so
    its epoch must never be picked."""
    return EmbedtuneError(
        f"training diverged at step {step} ({what}): train.lr={cfg.lr:g} is too high for "
        f"train.method={cfg.method}; lower train.lr"
    )


def check_loss(loss: float, step: int, cfg: TrainConfig) -> None:
    if not math.isfinite(loss):
        raise diverged(cfg, step, f"loss {loss}")


def method_config(raw: Any) -> type[TrainConfig]:
    """The schema of the `train` section: that of the method it names."""
    name = raw.get("method") if isinstance(raw, dict) else None
    return METHODS.get(name).Config


def get_method(name: str) -> Method:
    return METHODS.get(name)()


def save_tuned(model: TunedModel, folder: Path) -> None:
    """Let the model fill a fresh folder beside `folder`, then put it in `folder`'s place."""
    with io.atomic_folder(folder) as tmp:
        model.save(tmp)


def saved_config(folder: Path) -> dict:
    return io.read_json(Path(folder) / "config.json", stage="train")


def load_tuned(folder: Path, embed: EmbedConfig | None = None) -> TunedModel:
    """Load what `train` saved in `folder`; `embed` gives prefixes and device where needed."""
    name = saved_config(folder).get("method")
    try:
        method = get_method(name)
    except EmbedtuneError:
        raise EmbedtuneError(
            f"{Path(folder) / 'config.json'}: unknown method {name!r} "
            f"(known: {', '.join(METHODS.names())})"
        ) from None
    return method.load(Path(folder), embed)
