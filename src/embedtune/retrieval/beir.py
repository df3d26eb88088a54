"""Retrieval test sets in BEIR layout: corpus.jsonl, queries.jsonl and graded qrels/test.tsv.

Usage: bench = load_benchmark("data/beir/scifact")
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from embedtune.errors import EmbedtuneError
from embedtune.retrieval.ranking import Qrels


@dataclass(frozen=True)
class Benchmark:
    """A retrieval test set in BEIR layout: corpus texts, query texts and graded qrels."""

    corpus: dict[str, str]
    queries: dict[str, str]  # only the queries that have at least one relevant document
    qrels: Qrels


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Each line of `path` with its number, decoded as UTF-8 (a leading BOM is dropped); a
    missing file, or a line that is not UTF-8, raises one `EmbedtuneError` naming it."""
    if not path.is_file():
        raise EmbedtuneError(
            f"{path} not found (BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv)"
        )
    try:
        f = path.open("rb")
    except OSError as err:
        raise EmbedtuneError(f"{path}: cannot be read ({err.strerror})") from None
    with f:
        for number, raw in enumerate(f, start=1):
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise EmbedtuneError(
                    f"{path}:{number}: not UTF-8 (byte 0x{raw[err.start]:02x} at column "
                    f"{err.start + 1}): save the file as UTF-8"
                ) from None


def _read_jsonl_texts(path: Path, with_title: bool) -> dict[str, str]:
    texts: dict[str, str] = {}
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise EmbedtuneError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise EmbedtuneError(f"{path}:{number}: expected a JSON object")
        doc_id, text = record.get("_id"), record.get("text")
        if not isinstance(doc_id, str | int) or isinstance(doc_id, bool) or doc_id == "":
            raise EmbedtuneError(f"{path}:{number}: missing or invalid _id")
        if not isinstance(text, str):
            raise EmbedtuneError(f"{path}:{number}: missing or invalid text")
        doc_id = str(doc_id)
        if doc_id in texts:
            raise EmbedtuneError(f"{path}:{number}: duplicate _id {doc_id!r}")
        title = record.get("title") if with_title else None
        if title is not None and not isinstance(title, str):
            raise EmbedtuneError(f"{path}:{number}: title must be a string")
        # BEIR's convention for dense retrievers: title and text joined by a space.
        texts[doc_id] = f"{title} {text}".strip() if title else text
    if not texts:
        raise EmbedtuneError(f"{path}: no records")
    return texts


def _read_qrels(path: Path, queries: dict[str, str], corpus: dict[str, str]) -> Qrels:
    qrels: Qrels = {}
    lines = _lines(path)
    header = next(lines, (1, ""))[1].rstrip("\r\n").split("\t")
    if [h.strip() for h in header] != ["query-id", "corpus-id", "score"]:
        raise EmbedtuneError(
            f"{path}:1: header must be query-id<TAB>corpus-id<TAB>score, got {header!r}"
        )
    for number, line in lines:
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != 3:
            raise EmbedtuneError(f"{path}:{number}: expected 3 tab-separated fields")
        qid, cid, score = (x.strip() for x in fields)
        try:
            grade = float(score)
        except ValueError:
            raise EmbedtuneError(f"{path}:{number}: score {score!r} is not a number") from None
        if not math.isfinite(grade):
            raise EmbedtuneError(f"{path}:{number}: score {score!r} is not finite")
        if qid not in queries:
            raise EmbedtuneError(f"{path}:{number}: query-id {qid!r} is not in queries.jsonl")
        if cid not in corpus:
            raise EmbedtuneError(f"{path}:{number}: corpus-id {cid!r} is not in corpus.jsonl")
        if grade > 0:
            qrels.setdefault(qid, {})[cid] = grade
    if not qrels:
        raise EmbedtuneError(f"{path}: no pair with a score > 0")
    return qrels


def load_benchmark(folder: Path | str) -> Benchmark:
    """Read a BEIR folder; a bad file or line raises one `EmbedtuneError` naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EmbedtuneError(f"{folder}: benchmark folder not found (eval.benchmarks)")
    corpus = _read_jsonl_texts(folder / "corpus.jsonl", with_title=True)
    queries = _read_jsonl_texts(folder / "queries.jsonl", with_title=False)
    qrels = _read_qrels(folder / "qrels" / "test.tsv", queries, corpus)
    # BEIR scores only the queries that the test qrels judge relevant to something.
    return Benchmark(corpus, {q: queries[q] for q in queries if q in qrels}, qrels)
