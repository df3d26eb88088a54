"""metrics/examples.md: the validation questions the shipped retriever moved most, up and down.

A page GitHub and DagsHub render, to see in a minute whether the questions are sensible and
what tuning changed: for each question, its text, the first words of its gold chunk, and the
rank of that chunk under the dense base model and under the shipped retriever (when the dense
base itself is shipped, under the tuned model instead). Ranks are those `eval` scored (the
best-ranked gold chunk; ties count against the retriever); ties in movement are broken by
question id, so the same ranks give the same bytes.
"""

from __future__ import annotations

import re

import numpy as np

EXAMPLES = 10  # questions listed in each direction
FIRST_WORDS = 20  # words of the gold chunk shown


def compared_retriever(shipped: str) -> str:
    """The retriever set against the dense base: the shipped one, or `tuned` when the base is
    shipped (nothing would move)."""
    return "tuned" if shipped == "base" else shipped


def cell(text: str) -> str:
    """`text` as one Markdown table cell: one line, no column break, no HTML."""
    one_line = " ".join(text.split())
    return one_line.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")


def first_words(text: str, count: int = FIRST_WORDS) -> str:
    words = text.split()
    return " ".join(words[:count]) + (" …" if len(words) > count else "")


def moves(
    query_ids: list[str], base: np.ndarray, other: np.ndarray
) -> tuple[list[tuple], list[tuple]]:
    """(question id, base rank, other rank) of the questions moved up most and down most.
    A rank of 0 (no gold chunk) is left out; equal moves are ordered by question id."""
    rows = [
        (int(b) - int(o), qid, int(b), int(o))
        for qid, b, o in zip(query_ids, base, other, strict=True)
        if b and o
    ]
    up = sorted((r for r in rows if r[0] > 0), key=lambda r: (-r[0], r[1]))[:EXAMPLES]
    down = sorted((r for r in rows if r[0] < 0), key=lambda r: (r[0], r[1]))[:EXAMPLES]
    return [r[1:] for r in up], [r[1:] for r in down]


def table(rows: list[tuple], dataset: dict, name: str) -> str:
    if not rows:
        return "None."
    lines = [
        f"| question | its chunk begins | base rank | {name} rank |",
        "|---|---|---:|---:|",
    ]
    for qid, base, other in rows:
        gold = dataset["relevant_docs"][qid][0]
        chunk = first_words(dataset["corpus"][gold])
        lines.append(f"| {cell(dataset['queries'][qid])} | {cell(chunk)} | {base} | {other} |")
    return "\n".join(lines)


def examples_markdown(
    query_ids: list[str], best: dict[str, np.ndarray], dataset: dict, shipped: str
) -> str:
    """The page for one split: `best` maps each retriever to its (queries,) best gold ranks."""
    name = compared_retriever(shipped)
    up, down = moves(query_ids, best["base"], best[name])
    note = "" if name == shipped else " (the dense base is shipped; this is the tuned model)"
    safe_name = re.sub(r"[|<]", "", name)
    return (
        "\n\n".join(
            [
                "# Examples: validation questions the retriever moved most",
                f"`{safe_name}`{note} against the dense base model, on {len(query_ids)} validation "
                "questions: the rank of each question's chunk (1 is first). Every question's ranks "
                "are in `eval_queries.csv`; `dvc plots show` draws them.",
                f"## Moved up ({len(up)} shown)",
                table(up, dataset, safe_name),
                f"## Moved down ({len(down)} shown)",
                table(down, dataset, safe_name),
            ]
        )
        + "\n"
    )
