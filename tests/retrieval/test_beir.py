"""BEIR folders (corpus.jsonl, queries.jsonl, qrels/test.tsv): reading, and one-line errors that
name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedtune.errors import EmbedtuneError
from embedtune.retrieval.beir import Benchmark, load_benchmark
from tests.helpers.retrieval import BEIR_CORPUS, BEIR_QRELS, write_beir


def test_load_benchmark(tmp_path):
    bench = load_benchmark(write_beir(tmp_path / "tiny"))
    assert isinstance(bench, Benchmark)
    assert bench.corpus["d-for"] == "for The for statement iterates over a sequence."
    assert bench.corpus["d-raise"] == "The raise statement raises an exception."  # empty title
    assert bench.corpus["d-pass"] == "pass is a null operation; nothing happens."
    assert list(bench.corpus) == ["d-for", "d-raise", "d-import", "d-pass"]
    assert list(bench.queries) == ["q1", "q2"]  # q3 has no judgement: not scored
    assert bench.qrels == {"q1": {"d-for": 2.0, "d-pass": 1.0}, "q2": {"d-raise": 1.0}}


def test_integer_ids_blank_lines_and_string_path(tmp_path):
    folder = write_beir(
        tmp_path / "ints",
        corpus=[{"_id": 7, "text": "seven"}, {"_id": "8", "text": "eight"}],
        queries=[{"_id": 1, "text": "which number?"}],
        qrels="query-id\tcorpus-id\tscore\n\n1\t7\t1\n",
    )
    (folder / "corpus.jsonl").write_text((folder / "corpus.jsonl").read_text() + "\n\n")
    bench = load_benchmark(str(folder))
    assert bench.corpus == {"7": "seven", "8": "eight"}
    assert bench.queries == {"1": "which number?"}
    assert bench.qrels == {"1": {"7": 1.0}}


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: (f / "corpus.jsonl").unlink(), r"corpus\.jsonl not found"),
        (lambda f: (f / "queries.jsonl").unlink(), r"queries\.jsonl not found"),
        (lambda f: (f / "qrels" / "test.tsv").unlink(), r"test\.tsv not found"),
        (lambda f: write_beir(f, corpus=[]), r"corpus\.jsonl: no records"),
        (
            lambda f: (f / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "b",\n'),
            r"corpus\.jsonl:2: not valid JSON",
        ),
        (lambda f: write_beir(f, corpus=[[1, 2]]), r"corpus\.jsonl:1: expected a JSON object"),
        (
            lambda f: write_beir(f, corpus=[{"text": "x"}]),
            r"corpus\.jsonl:1: missing or invalid _id",
        ),
        (
            lambda f: write_beir(f, corpus=[{"_id": True, "text": "x"}]),
            r"corpus\.jsonl:1: missing or invalid _id",
        ),
        (
            lambda f: write_beir(f, queries=[{"_id": "q1"}]),
            r"queries\.jsonl:1: missing or invalid text",
        ),
        (
            lambda f: write_beir(f, corpus=[*BEIR_CORPUS, {"_id": "d-for", "text": "again"}]),
            r"corpus\.jsonl:5: duplicate _id 'd-for'",
        ),
        (
            lambda f: write_beir(f, corpus=[{"_id": "d", "title": 3, "text": "x"}]),
            r"corpus\.jsonl:1: title must be a string",
        ),
        (lambda f: write_beir(f, qrels="q\tc\ts\n"), r"test\.tsv:1: header must be query-id"),
        (lambda f: write_beir(f, qrels=""), r"test\.tsv:1: header must be query-id"),
        (
            lambda f: write_beir(f, qrels=BEIR_QRELS + "q1 d-for 1\n"),
            r"test\.tsv:6: expected 3 tab-separated fields",
        ),
        (
            lambda f: write_beir(f, qrels=BEIR_QRELS + "q1\td-for\thigh\n"),
            r"test\.tsv:6: score 'high' is not a number",
        ),
        (
            lambda f: write_beir(f, qrels=BEIR_QRELS + "q1\td-for\tnan\n"),
            r"test\.tsv:6: score 'nan' is not finite",
        ),
        (
            lambda f: write_beir(f, qrels=BEIR_QRELS + "q9\td-for\t1\n"),
            r"test\.tsv:6: query-id 'q9' is not in queries\.jsonl",
        ),
        (
            lambda f: write_beir(f, qrels=BEIR_QRELS + "q1\td-9\t1\n"),
            r"test\.tsv:6: corpus-id 'd-9' is not in corpus\.jsonl",
        ),
        (
            lambda f: write_beir(f, qrels="query-id\tcorpus-id\tscore\nq1\td-for\t0\n"),
            r"test\.tsv: no pair with a score > 0",
        ),
    ],
)
def test_bad_benchmark_folder(tmp_path, damage, expected):
    folder = write_beir(tmp_path / "bench")
    damage(folder)
    with pytest.raises(EmbedtuneError, match=expected) as info:
        load_benchmark(folder)
    assert "\n" not in str(info.value)
    assert str(folder) in str(info.value)


def test_missing_benchmark_folder(tmp_path):
    with pytest.raises(EmbedtuneError, match=r"nowhere: benchmark folder not found \(eval\."):
        load_benchmark(tmp_path / "nowhere")


def latin1_line(path: Path, number: int) -> int:
    """Write "\u00e9" in Latin-1 for the first "a" of line `number` of `path`, as an editor
    saving in the wrong encoding does; its column."""
    lines = path.read_bytes().split(b"\n")
    column = lines[number - 1].index(b"a") + 1
    lines[number - 1] = lines[number - 1].replace(b"a", b"\xe9", 1)
    path.write_bytes(b"\n".join(lines))
    return column


@pytest.mark.parametrize(
    ("name", "number"),
    [("queries.jsonl", 2), ("corpus.jsonl", 3), ("qrels/test.tsv", 4)],
)
def test_a_byte_that_is_not_utf8_names_the_file_and_line(tmp_path, name, number):
    folder = write_beir(tmp_path / "bench")
    column = latin1_line(folder / name, number)
    with pytest.raises(EmbedtuneError) as info:
        load_benchmark(folder)
    assert str(info.value) == (
        f"{folder / name}:{number}: not UTF-8 (byte 0xe9 at column {column}): "
        "save the file as UTF-8"
    )


def test_a_utf8_byte_order_mark_and_crlf_line_ends_are_read(tmp_path):
    folder = write_beir(tmp_path / "bom")
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        text = (folder / name).read_text().replace("\n", "\r\n")
        (folder / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_benchmark(folder) == load_benchmark(write_beir(tmp_path / "plain"))
