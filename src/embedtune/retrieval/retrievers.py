"""The candidate retrievers: dense base, dense tuned, BM25, and each fusion of a dense model
with BM25 that `retrieve` lists; and how each scores a block of queries against a corpus.

Names, in the order the selection rule prefers on a tie: `base`, `tuned`, `bm25`, then
`DENSE+bm25:LABEL` for each dense model of `retrieve.dense` and each fusion setting of
`retrieve.fusion` (`base+bm25:rrf60`, `tuned+bm25:convex50`, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from embedtune import io
from embedtune.config import BM25Config, RetrieveConfig
from embedtune.errors import EmbedtuneError
from embedtune.retrieval.fusion import Fusion, make_fusion
from embedtune.retrieval.lexical import BM25Index
from embedtune.retrieval.ranking import BlockScorer, Scorer, cosine_scorer
from embedtune.retrieval.scores import shared_transforms

DENSE = ("base", "tuned")
BM25 = "bm25"


@dataclass(frozen=True)
class Candidate:
    """One retriever: a dense model, BM25, or a fusion of the two."""

    name: str
    dense: str | None = None  # "base" or "tuned"
    lexical: bool = False
    fusion: Fusion | None = None
    fusion_kind: str | None = None
    fusion_settings: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict:
        """What a user needs to rebuild it (written to models/retriever/retriever.json)."""
        fusion = None
        if self.fusion_kind is not None:
            fusion = {"kind": self.fusion_kind, **self.fusion_settings}
        return {"retriever": self.name, "dense": self.dense, "bm25": self.lexical, "fusion": fusion}


def dense_candidates() -> list[Candidate]:
    return [Candidate(model, dense=model) for model in DENSE]


def candidates(cfg: RetrieveConfig | None) -> list[Candidate]:
    """Every candidate `cfg` asks for, in the order ties prefer; only the two dense models
    without `cfg`."""
    if cfg is None:
        return dense_candidates()
    found = [*dense_candidates(), Candidate(BM25, lexical=True)]
    for dense in cfg.dense:
        for kind, entries in cfg.fusion.items():
            for index, settings in enumerate(entries):
                fusion = make_fusion(kind, settings, index)
                name = f"{dense}+{BM25}:{fusion.label()}"
                found.append(Candidate(name, dense, True, fusion, kind, dict(settings)))
    names = [c.name for c in found]
    for name in names:
        if names.count(name) > 1:
            raise EmbedtuneError(f"retrieve.fusion lists the candidate {name!r} twice")
    if cfg.ship is not None and cfg.ship not in names:
        raise EmbedtuneError(
            f"retrieve.ship={cfg.ship!r} is no candidate (known: {', '.join(names)})"
        )
    return found


@dataclass
class RetrievalInputs:
    """One corpus and its queries as every candidate needs them."""

    dense: dict[str, tuple[torch.Tensor, torch.Tensor]]  # model -> (queries, chunks) embeddings
    bm25: BM25Index | None = None
    query_tokens: list[list[int]] | None = None  # the queries in the BM25 vocabulary

    @classmethod
    def build(
        cls,
        dense: dict[str, tuple[torch.Tensor, torch.Tensor]],
        queries: Sequence[str],
        corpus: Sequence[str],
        bm25: BM25Config | None,
    ) -> RetrievalInputs:
        if bm25 is None:
            return cls(dense)
        index = BM25Index.build(corpus, bm25)
        return cls(dense, index, index.query_tokens(queries))

    def scorer(self, candidate: Candidate) -> Scorer:
        dense = lexical = None
        if candidate.dense is not None:
            dense = cosine_scorer(*self.dense[candidate.dense])
        if candidate.lexical:
            lexical = self._bm25_scorer(candidate.name)
        if dense is not None and lexical is not None:
            fusion = candidate.fusion
            return lambda lo, hi: fusion.fuse(dense(lo, hi), lexical(lo, hi))
        return dense if dense is not None else lexical

    def _bm25_scorer(self, name: str) -> Scorer:
        """BM25 scores of a block of queries, for candidate `name` (which needs them)."""
        if self.bm25 is None:
            raise EmbedtuneError(f"{name} needs BM25, which was not built")
        index, tokens = self.bm25, self.query_tokens
        return lambda lo, hi: index.scores_of_tokens(tokens[lo:hi])

    def block_scorer(self, found: Sequence[Candidate]) -> BlockScorer:
        """Every candidate of `found`, in order, scored on one block of queries: each dense
        model's cosine scores and BM25's are computed once per block and shared by the
        candidates that use them (their fusions share min-max scaling and ranks too)."""
        dense = {
            m: cosine_scorer(*self.dense[m])
            for m in dict.fromkeys(c.dense for c in found)
            if m is not None
        }
        readers = [c.name for c in found if c.lexical]
        lexical = self._bm25_scorer(readers[0]) if readers else None

        def scores(lo: int, hi: int):
            parts: dict[str, torch.Tensor] = {}

            def part(key: str) -> torch.Tensor:
                if key not in parts:
                    parts[key] = lexical(lo, hi) if key == BM25 else dense[key](lo, hi)
                return parts[key]

            with shared_transforms():
                for c in found:
                    d = part(c.dense) if c.dense is not None else None
                    bm25 = part(BM25) if c.lexical else None
                    if d is not None and bm25 is not None:
                        yield c.name, c.fusion.fuse(d, bm25)
                    else:
                        yield c.name, d if d is not None else bm25

        return scores


def shipped_retriever(cfg: RetrieveConfig) -> str:
    """The name of the retriever `select` shipped (`io.RETRIEVER_FILE`), checked against the
    candidates `cfg` lists today."""
    name = io.read_json(io.RETRIEVER_FILE, stage="select").get("retriever")
    known = [c.name for c in candidates(cfg)]
    if name not in known:
        raise EmbedtuneError(
            f"{io.RETRIEVER_FILE} ships {name!r}, which params.yaml's retrieve section does not "
            "list: run `dvc repro select` first"
        )
    return name
