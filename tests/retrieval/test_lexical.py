"""BM25 through bm25s: stemming and stop words as `retrieve.bm25` sets them, scores per query."""

from __future__ import annotations

import bm25s
import pytest
import torch

from embedtune.errors import EmbedtuneError
from embedtune.retrieval.lexical import BM25Index
from tests.helpers import cfg

CORPUS = [
    "The cat sat on the mat.",
    "Dogs are running in the parks of the city.",
    "A cat and a dog share the house.",
]


def bm25(**updates):
    return cfg("retrieve").bm25.model_copy(update=updates)


def test_scores_are_bm25s_own():
    index = BM25Index.build(CORPUS, bm25())
    scores = index.scores(["cats running", "the of and"])
    assert scores.shape == (2, 3) and scores.dtype == torch.float32
    # the same through bm25s' public API: its tokenizer with English stems and stop words
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    engine = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    engine.index(bm25s.tokenize(CORPUS, stopwords="en", stemmer=stemmer, show_progress=False))
    tokens = bm25s.tokenize(["cats running"], stopwords="en", stemmer=stemmer, return_ids=False)
    expected = engine.get_scores(tokens[0])
    assert scores[0].tolist() == pytest.approx(expected.tolist())
    assert scores[0].argmax() == 1  # "running" is rarer than "cat"
    assert scores[1].tolist() == [0.0, 0.0, 0.0]  # stop words only: no evidence anywhere


def test_stemming_and_stop_words_follow_the_config():
    stemmed = BM25Index.build(CORPUS, bm25()).scores(["cats"])
    assert stemmed[0, 0] > 0 and stemmed[0, 1] == 0
    unstemmed = BM25Index.build(CORPUS, bm25(stemming=False)).scores(["cats"])
    assert unstemmed.abs().sum() == 0  # "cats" is no word of the corpus
    kept = BM25Index.build(CORPUS, bm25(stopwords=False)).scores(["the"])
    assert (kept > 0).all()  # every chunk holds "the"


def test_no_queries_and_unknown_words():
    index = BM25Index.build(CORPUS, bm25())
    assert index.scores([]).shape == (0, 3)
    assert index.scores(["zebra"]).abs().sum() == 0


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ({"language": "klingon"}, "retrieve.bm25.language='klingon' has no stemmer"),
        ({"language": "klingon", "stemming": False}, "has no stop-word list in bm25s"),
    ],
)
def test_unknown_language_is_one_line(updates, message):
    with pytest.raises(EmbedtuneError, match=message):
        BM25Index.build(CORPUS, bm25(**updates))
