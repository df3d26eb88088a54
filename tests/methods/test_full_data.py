"""The `full` method's training rows: prefixed (question, chunk) texts and hard negatives mined
with the base model from a rank window."""

from __future__ import annotations

import pytest
import torch

from embedtune.errors import EmbedtuneError
from embedtune.methods.full_data import rank_window_negatives, training_columns
from embedtune.methods.heldout import heldout_split
from tests.methods.helpers import embed_cfg, full_cfg, tiny_dataset

EMBED = embed_cfg()


def test_rank_window_negatives_skip_gold_and_stay_in_the_window():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    gold = torch.zeros(2, 6, dtype=torch.bool)
    gold[0, 1] = gold[1, 5] = True  # query 0's own chunk ranks second, query 1's first
    g = torch.Generator().manual_seed(0)
    # Non-gold ranks 2..3: query 0 -> chunks 2, 3 (chunk 0 is rank 1); query 1 -> chunks 3, 2.
    picked = rank_window_negatives(scores, gold, [2, 3], 2, g)
    assert picked.tolist() == [[2, 3], [3, 2]]
    for _ in range(20):
        one = rank_window_negatives(scores, gold, [2, 4], 1, g)
        assert one[0].item() in (2, 3, 4) and one[1].item() in (3, 2, 1)


def test_rank_window_negatives_are_seeded():
    scores = torch.rand(5, 40, generator=torch.Generator().manual_seed(1))
    gold = torch.eye(5, 40, dtype=torch.bool)

    def draw(seed):
        return rank_window_negatives(scores, gold, [3, 30], 4, torch.Generator().manual_seed(seed))

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


def test_rank_window_negatives_need_enough_chunks():
    scores = torch.rand(1, 5)
    gold = torch.tensor([[True, False, False, False, False]])
    with pytest.raises(
        EmbedtuneError, match=r"hard_negatives=3.*only 2 other chunks in ranks 3\.\.30"
    ):
        rank_window_negatives(scores, gold, [3, 30], 3, torch.Generator())


def test_rank_window_negatives_of_no_query():
    picked = rank_window_negatives(
        torch.zeros(0, 4), torch.zeros(0, 4, dtype=torch.bool), [1, 2], 2, torch.Generator()
    )
    assert picked.shape == (0, 2)


def held_out(dataset: dict) -> tuple[list[str], list[str], set[str]]:
    train_ids, held_ids = heldout_split(dataset, 0.25, 42)
    return train_ids, held_ids, {c for q in held_ids for c in dataset["relevant_docs"][q]}


def test_training_columns_without_hard_negatives(minilm):
    dataset = tiny_dataset()
    train_ids, _, held_chunks = held_out(dataset)
    columns = training_columns(minilm, dataset, train_ids, held_chunks, full_cfg(), EMBED, 0)
    assert list(columns) == ["anchor", "positive"]
    assert columns["anchor"] == ["query: " + dataset["queries"][q] for q in train_ids]
    assert columns["positive"] == [
        "passage: " + dataset["corpus"][dataset["relevant_docs"][q][0]] for q in train_ids
    ]


def test_training_columns_have_prefixes_hard_negatives_and_no_held_out_text(minilm):
    dataset = tiny_dataset()
    train_cfg = full_cfg(hard_negatives=2, hard_negative_ranks=[1, 4])
    train_ids, held_ids, held_chunks = held_out(dataset)
    columns = training_columns(minilm, dataset, train_ids, held_chunks, train_cfg, EMBED, seed=0)
    assert list(columns) == ["anchor", "positive", "negative_1", "negative_2"]
    assert len(columns["anchor"]) == len(train_ids)
    held_texts = {"passage: " + dataset["corpus"][c] for c in held_chunks}
    held_questions = {"query: " + dataset["queries"][q] for q in held_ids}
    for row in zip(*columns.values(), strict=True):
        anchor, positive, *negatives = row
        assert anchor.startswith("query: ") and anchor not in held_questions
        assert all(t.startswith("passage: ") for t in (positive, *negatives))
        assert positive not in negatives and len(set(negatives)) == 2
        assert not held_texts & {positive, *negatives}
    again = training_columns(minilm, dataset, train_ids, held_chunks, train_cfg, EMBED, seed=0)
    assert again == columns  # seeded


def test_a_chunk_with_the_same_text_as_the_gold_one_is_never_its_negative(minilm):
    dataset = tiny_dataset()
    dataset["corpus"]["twin"] = dataset["corpus"]["c0"]  # same text, another id
    train_ids = [f"q{i}" for i in range(12)]
    train_cfg = full_cfg(hard_negatives=1, hard_negative_ranks=[1, 1])
    columns = training_columns(minilm, dataset, train_ids, set(), train_cfg, EMBED, seed=0)
    # Rank 1 of the other texts: for q0 the twin would be first, were it not c0's own text.
    for positive, negative in zip(columns["positive"], columns["negative_1"], strict=True):
        assert negative != positive
    assert len(set(columns["negative_1"])) > 1
