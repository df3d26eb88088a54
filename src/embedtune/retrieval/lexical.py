"""BM25 over a corpus of chunks, through `bm25s` (the engine behind LlamaIndex's BM25Retriever).

Usage: index = BM25Index.build(chunk_texts, cfg.bm25); index.scores(["a query"])  # (1, chunks)

Tokens: bm25s' tokenizer (lower case, words of two or more letters), the language's stop words
dropped and PyStemmer's stemmer applied when `retrieve.bm25` says so, the same way for chunks
and queries. A query none of whose words is in the corpus scores 0 everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from embedtune.config import BM25Config
from embedtune.errors import EmbedtuneError


def _stemmer(cfg: BM25Config):
    if not cfg.stemming:
        return None
    import Stemmer

    if cfg.language not in Stemmer.algorithms():
        raise EmbedtuneError(
            f"retrieve.bm25.language={cfg.language!r} has no stemmer "
            f"(known: {', '.join(Stemmer.algorithms())}), or set retrieve.bm25.stemming=false"
        )
    return Stemmer.Stemmer(cfg.language)


def _stopwords(cfg: BM25Config) -> str | None:
    """The name of bm25s' stop-word list for the language (None: keep every word)."""
    import bm25s

    if not cfg.stopwords:
        return None
    try:
        bm25s.tokenize(["probe"], stopwords=cfg.language, show_progress=False)
    except ValueError:
        raise EmbedtuneError(
            f"retrieve.bm25.language={cfg.language!r} has no stop-word list in bm25s: "
            "set retrieve.bm25.stopwords=false"
        ) from None
    return cfg.language


@dataclass
class BM25Index:
    """A bm25s index of a corpus and the tokenizer settings its queries need."""

    engine: object  # bm25s.BM25
    stemmer: object | None
    stopwords: str | None

    @classmethod
    def build(cls, texts: Sequence[str], cfg: BM25Config) -> BM25Index:
        import bm25s

        stemmer, stopwords = _stemmer(cfg), _stopwords(cfg)
        tokens = bm25s.tokenize(
            list(texts), stopwords=stopwords, stemmer=stemmer, show_progress=False
        )
        engine = bm25s.BM25(k1=cfg.k1, b=cfg.b, method=cfg.method)
        engine.index(tokens, show_progress=False)
        return cls(engine, stemmer, stopwords)

    def query_tokens(self, queries: Sequence[str]) -> list[list[int]]:
        """Each query's token ids in the index's vocabulary (unknown words left out)."""
        import bm25s

        words = bm25s.tokenize(
            list(queries),
            stopwords=self.stopwords,
            stemmer=self.stemmer,
            return_ids=False,
            show_progress=False,
        )
        return [self.engine.get_tokens_ids(w) for w in words]

    def scores_of_tokens(self, tokens: Sequence[list[int]]) -> torch.Tensor:
        """(queries, chunks) BM25 scores of queries given as `query_tokens`."""
        scores = np.zeros((len(tokens), self.engine.scores["num_docs"]), dtype=np.float32)
        for row, ids in enumerate(tokens):
            scores[row] = self.engine.get_scores_from_ids(ids)
        return torch.from_numpy(scores)

    def scores(self, queries: Sequence[str]) -> torch.Tensor:
        """(queries, chunks) BM25 scores."""
        return self.scores_of_tokens(self.query_tokens(queries))
