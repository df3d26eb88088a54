"""Fusions of dense and BM25 scores: reciprocal rank fusion and the convex combination."""

from __future__ import annotations

import re

import pytest
import torch

from embedtune.errors import EmbedtuneError
from embedtune.retrieval import scores as scores_module
from embedtune.retrieval.fusion import FUSIONS, make_fusion
from embedtune.retrieval.scores import competition_ranks, min_max

DENSE = torch.tensor([[0.9, 0.5, 0.5, 0.1]])
LEXICAL = torch.tensor([[0.0, 7.0, 0.0, 3.0]])


def test_registry_lists_both_kinds():
    assert FUSIONS.names() == ["convex", "rrf"]


def test_tied_scores_share_the_best_rank():
    assert competition_ranks(DENSE).tolist() == [[1, 2, 2, 4]]
    assert competition_ranks(LEXICAL).tolist() == [[3, 1, 3, 2]]


def test_reciprocal_rank_fusion():
    rrf = make_fusion("rrf", {"k": 60}, 0)
    assert rrf.label() == "rrf60"
    fused = rrf.fuse(DENSE, LEXICAL)[0]
    expected = [1 / 61 + 1 / 63, 1 / 62 + 1 / 61, 1 / 62 + 1 / 63, 1 / 64 + 1 / 62]
    assert fused.tolist() == pytest.approx(expected)
    assert fused.argmax() == 1  # second by dense, first by BM25


def test_convex_combination_of_min_max_scores():
    assert min_max(LEXICAL).tolist() == [[0.0, 1.0, 0.0, 3 / 7]]
    assert min_max(torch.ones(1, 3)).tolist() == [[0.0, 0.0, 0.0]]  # nothing to tell apart
    convex = make_fusion("convex", {"dense_weight": 0.7}, 0)
    assert convex.label() == "convex70"
    fused = convex.fuse(DENSE, LEXICAL)[0]
    dense = [1.0, 0.5, 0.5, 0.0]
    lexical = [0.0, 1.0, 0.0, 3 / 7]
    assert fused.tolist() == pytest.approx(
        [0.7 * d + 0.3 * b for d, b in zip(dense, lexical, strict=True)]
    )


def test_rows_are_fused_independently():
    rrf = make_fusion("rrf", {"k": 10}, 0)
    both = rrf.fuse(torch.cat([DENSE, LEXICAL]), torch.cat([LEXICAL, DENSE]))
    assert torch.equal(both[0], rrf.fuse(DENSE, LEXICAL)[0])
    assert torch.equal(both[1], rrf.fuse(LEXICAL, DENSE)[0])


@pytest.mark.parametrize(
    ("kind", "settings", "message"),
    [
        ("rrf", {"k": 0}, "retrieve.fusion.rrf[0].k must be greater than 0"),
        ("convex", {"dense_weight": 1.5}, "retrieve.fusion.convex[0].dense_weight must be less"),
        ("convex", {"dense_weight": 0.5, "w": 1}, "unknown key retrieve.fusion.convex[0].w"),
        ("convex", {}, "missing key retrieve.fusion.convex[0].dense_weight"),
        ("max", {}, "retrieve.fusion='max' is not known (known: convex, rrf)"),
    ],
)
def test_bad_settings_name_their_key(kind, settings, message):
    with pytest.raises(EmbedtuneError, match=re.escape(message)):
        make_fusion(kind, settings, 0)


def test_shared_transforms_compute_once_per_tensor_and_forget_after():
    calls = []
    scores = torch.tensor([[1.0, 3.0, 2.0]])
    with scores_module.shared_transforms():
        first = min_max(scores)
        assert min_max(scores) is first  # the same tensor: computed once
        assert min_max(scores.clone()) is not first  # another tensor: computed again
        assert competition_ranks(scores).tolist() == [[3, 1, 2]]
        calls.append(len(scores_module._shared))
    assert calls == [3] and scores_module._shared is None
    assert min_max(scores) is not first  # outside the block nothing is kept
