"""Rankings made by hand, and a small BEIR folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from embedtune.retrieval.ranking import Ranked, rank, rank_relevant


def ranked_from(scores, qrels: dict[int, dict[int, float]]) -> Ranked:
    """Rank a (queries, chunks) score list; qrels maps query row -> {chunk column: grade}."""
    scores = torch.as_tensor(scores, dtype=torch.float32)
    relevance = torch.zeros_like(scores)
    for q, grades in qrels.items():
        for c, g in grades.items():
            relevance[q, c] = g
    return rank_relevant(scores, relevance)


# Hand-made: three chunks on the unit circle, four queries with known gold ranks.
CORPUS = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
QUERIES = [
    [1.0, 0.1],  # gold c0, the closest chunk: rank 1
    [1.0, 0.2],  # gold c1, second closest after c0: rank 2
    [2.0, 0.0],  # gold c2, the farthest (and not unit length): rank 3
    [0.0, 3.0],  # gold c0 and c1: c1 ranks first; c0 ties with c2 at 0 and ranks after it
]
QIDS, CIDS = ["q0", "q1", "q2", "q3"], ["c0", "c1", "c2"]
QRELS = {"q0": {"c0": 1.0}, "q1": {"c1": 1.0}, "q2": {"c2": 1.0}, "q3": {"c0": 1.0, "c1": 1.0}}


def hand_made_ranked() -> Ranked:
    return rank(torch.tensor(QUERIES), torch.tensor(CORPUS), QIDS, CIDS, QRELS)


# --- a BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv ---------------------------------

BEIR_CORPUS = [
    {"_id": "d-for", "title": "for", "text": "The for statement iterates over a sequence."},
    {"_id": "d-raise", "title": "", "text": "The raise statement raises an exception."},
    {"_id": "d-import", "title": "import", "text": "The import statement loads a module."},
    {"_id": "d-pass", "text": "pass is a null operation; nothing happens."},
]
BEIR_QUERIES = [
    {"_id": "q1", "text": "How do I loop over a list?"},
    {"_id": "q2", "text": "How do I signal an error?"},
    {"_id": "q3", "text": "A query without judgements"},
]
BEIR_QRELS = (
    "query-id\tcorpus-id\tscore\nq1\td-for\t2\nq1\td-pass\t1\nq2\td-raise\t1\nq2\td-for\t0\n"
)


def write_beir(folder: Path, corpus=None, queries=None, qrels: str | None = None) -> Path:
    """A small BEIR folder (two judged queries over four documents) at `folder`."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in (BEIR_CORPUS if corpus is None else corpus)]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    lines = [json.dumps(r) for r in (BEIR_QUERIES if queries is None else queries)]
    (folder / "queries.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "qrels" / "test.tsv").write_text(BEIR_QRELS if qrels is None else qrels)
    return folder
