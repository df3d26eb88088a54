"""The `full` method's training rows: prefixed (question, chunk) texts, the mined hard negatives
(padded when a question has fewer) and cross-encoder scores for distillation."""

from __future__ import annotations

import pytest

from embedtune.errors import EmbedtuneError
from embedtune.train.methods.full_data import padded, training_columns
from tests.helpers.methods import embed_cfg, tiny_dataset

EMBED = embed_cfg()
TRAIN_IDS = [f"q{i}" for i in range(12)]


def mined(qid: str) -> list[str]:
    """Two negatives per question: the next two chunks (q11 has none, q10 one)."""
    i = int(qid[1:])
    return [f"c{j}" for j in (i + 1, i + 2) if j < 12][: max(0, 11 - i)]


def test_training_columns_without_hard_negatives():
    dataset = tiny_dataset()
    columns = training_columns(dataset, TRAIN_IDS[:5], mined, 0, EMBED, 0)
    assert list(columns) == ["anchor", "positive"]
    assert columns["anchor"] == ["query: " + dataset["queries"][q] for q in TRAIN_IDS[:5]]
    assert columns["positive"] == ["passage: " + dataset["corpus"][f"c{i}"] for i in range(5)]


def test_training_columns_take_the_mined_negatives_in_order():
    dataset = tiny_dataset()
    columns = training_columns(dataset, ["q0", "q3"], mined, 2, EMBED, 0)
    assert list(columns) == ["anchor", "positive", "negative_1", "negative_2"]
    corpus = dataset["corpus"]
    assert columns["negative_1"] == ["passage: " + corpus["c1"], "passage: " + corpus["c4"]]
    assert columns["negative_2"] == ["passage: " + corpus["c2"], "passage: " + corpus["c5"]]


def test_a_question_with_fewer_negatives_repeats_them_and_one_with_none_gets_other_chunks():
    dataset = tiny_dataset()
    columns = training_columns(dataset, ["q10", "q11"], mined, 2, EMBED, seed=3)
    corpus = dataset["corpus"]
    assert [columns["negative_1"][0], columns["negative_2"][0]] == ["passage: " + corpus["c11"]] * 2
    own = "passage: " + corpus["c11"]
    assert own not in (columns["negative_1"][1], columns["negative_2"][1])
    assert training_columns(dataset, ["q10", "q11"], mined, 2, EMBED, seed=3) == columns


def test_padding_needs_some_other_chunk():
    with pytest.raises(EmbedtuneError, match="no other chunk"):
        padded([], 2, [], None)


def test_scores_become_the_label_column_and_unscored_questions_are_left_out():
    dataset = tiny_dataset()
    scores = {"q0": [5.0, 1.0, -1.0], "q3": [4.0, 2.0]}  # q3 has one scored negative only
    columns = training_columns(dataset, ["q0", "q3", "q5"], mined, 2, EMBED, 0, scores)
    assert columns["anchor"] == ["query: " + dataset["queries"]["q0"]]
    assert columns["label"] == [[5.0, 1.0, -1.0]]
    with pytest.raises(EmbedtuneError, match="mine.negatives"):
        training_columns(dataset, ["q3"], mined, 2, EMBED, 0, scores)
