"""metrics/examples.md from ranks: which questions are listed, in what order, and how cells are
made safe for a Markdown table."""

from __future__ import annotations

import numpy as np

from embedtune.eval import examples
from embedtune.eval.examples import cell, examples_markdown, first_words, moves

DATASET = {
    "queries": {
        "q1": "How do I loop over a list?",
        "q2": "What does | do between sets?",
        "q3": "What is <b>bold</b>?",
        "q4": "Why raise?",
        "q5": "When is pass used?",
        "q6": "No gold here?",
    },
    "corpus": {
        "c1": "A for loop runs its body once per item.\nIt stops at the end.",
        "c2": "The | operator is the union of two sets.",
        "c3": "HTML markup.",
        "c4": "The raise statement signals an error.",
        "c5": "pass does nothing.",
    },
    "relevant_docs": {"q1": ["c1"], "q2": ["c2"], "q3": ["c3"], "q4": ["c4"], "q5": ["c5"]},
}
IDS = ["q1", "q2", "q3", "q4", "q5", "q6"]
BASE = np.array([9, 4, 2, 1, 5, 0])
TUNED = np.array([1, 2, 2, 3, 3, 0])  # q1 +8, q2 +2, q3 0, q4 -2, q5 +2, q6 no gold chunk


def test_moves_order_by_size_then_question_id():
    up, down = moves(IDS, BASE, TUNED)
    assert up == [("q1", 9, 1), ("q2", 4, 2), ("q5", 5, 3)]  # q2 and q5 tie: by id
    assert down == [("q4", 1, 3)]  # unmoved q3 and gold-less q6 are in neither


def test_each_direction_lists_at_most_the_limit(monkeypatch):
    monkeypatch.setattr(examples, "EXAMPLES", 1)
    up, down = moves(IDS, BASE, TUNED)
    assert up == [("q1", 9, 1)] and down == [("q4", 1, 3)]


def test_cells_are_one_line_without_column_breaks_or_html():
    assert cell("a | b\nc") == "a \\| b c"
    assert cell("<b>x</b>") == "&lt;b>x&lt;/b>"
    assert first_words("one two three", 2) == "one two …"
    assert first_words("one two", 2) == "one two"


def test_page_for_a_shipped_fusion():
    best = {"base": BASE, "base+bm25:rrf60": TUNED}
    page = examples_markdown(IDS, best, DATASET, "base+bm25:rrf60")
    assert page.startswith("# Examples: validation questions the retriever moved most\n")
    assert "`base+bm25:rrf60` against the dense base model, on 6 validation questions" in page
    up = page.split("## Moved up (3 shown)")[1].split("## Moved down")[0]
    assert "| question | its chunk begins | base rank | base+bm25:rrf60 rank |" in up
    assert "| How do I loop over a list? | A for loop runs its body once per item. It stops" in up
    assert "| What does \\| do between sets? | The \\| operator is the union" in up
    assert up.index("loop over") < up.index("between sets") < up.index("pass used")
    assert "| Why raise? | The raise statement signals an error. | 1 | 3 |" in page
    assert page.endswith("|\n")


def test_a_shipped_base_compares_the_tuned_model_and_empty_lists_say_none():
    same = {"base": BASE, "tuned": BASE}
    page = examples_markdown(IDS, same, DATASET, "base")
    assert "`tuned` (the dense base is shipped; this is the tuned model)" in page
    assert page.count("None.") == 2
