"""What stage `mine` writes, as `train` and `eval` read it: data/mined/train.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from embedtune import io

MINED_FILE = io.MINED_DIR / "train.json"


@dataclass
class Mined:
    """The roles of the training questions and the hard negatives of those that train."""

    seen_corpus: list[str]  # question ids kept aside for the seen-corpus evaluation
    dropped: dict[str, int]  # question id -> base rank of its chunk, beyond roundtrip_top_k
    negatives: dict[str, list[str]]  # training question id -> negative chunk ids, hardest first
    scores: dict[str, list[float]] = field(default_factory=dict)  # id -> [positive, negatives...]

    def training(self, query_ids: list[str]) -> list[str]:
        """The ids of `query_ids` that train: not set aside, not dropped."""
        return [q for q in query_ids if q in self.negatives]

    def as_dict(self) -> dict:
        return asdict(self)


def load_mined(path: Path = MINED_FILE) -> Mined:
    raw = io.read_json(path, stage="mine")
    with io.reading(path, TypeError, stage="mine"):  # not the keys `mine` writes
        return Mined(**raw)
