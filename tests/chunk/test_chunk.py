"""Splitting real rendered PDFs into chunks with content-derived ids, and the chunk stage."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from pydoc_data.topics import topics

import pytest
import yaml

import embedtune.chunk.__main__ as chunk
from embedtune.chunk.splitting import node_id, split_documents
from embedtune.config import ChunkConfig
from embedtune.reading.readers import read_documents
from embedtune.stage import run_stage
from tests.helpers import cfg
from tests.helpers.documents import pdf_bytes

SMALL = cfg("chunk", chunk_size=96, chunk_overlap=8)


@pytest.fixture(scope="module")
def pdf_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("raw")
    (folder / "loops.pdf").write_bytes(pdf_bytes("for", "while"))
    return folder


@pytest.fixture(scope="module")
def documents(pdf_dir) -> list:
    return read_documents(pdf_dir, [".pdf"])


def chunk_folder(folder: Path, config: ChunkConfig = SMALL) -> list[dict]:
    return split_documents(read_documents(folder, [".pdf"]), config)


def test_chunk_records(documents):
    records = split_documents(documents, SMALL)
    assert len(records) > 3
    for r in records:
        assert set(r) == {"id", "text", "file_name", "page"}
        assert re.fullmatch(r"[0-9a-f]{16}", r["id"])
        assert r["text"] == r["text"].strip() != ""
        assert r["file_name"] == "loops.pdf"
        assert r["page"] in {d.metadata["page_label"] for d in documents}
    assert len({r["id"] for r in records}) == len(records)
    text = " ".join(r["text"] for r in records)
    assert 'The "for" statement' in text and 'The "while" statement' in text


def test_ids_identical_across_runs(pdf_dir, documents):
    first = split_documents(documents, SMALL)
    again = chunk_folder(pdf_dir)  # a fresh read of the same folder
    assert [(r["id"], r["text"]) for r in again] == [(r["id"], r["text"]) for r in first]


def test_ids_depend_on_text_and_file_name(tmp_path):
    same = pdf_bytes("for", "while")
    for name in ("a.pdf", "b.pdf"):
        (tmp_path / name / name).parent.mkdir()
        (tmp_path / name / name).write_bytes(same)
    a, b = chunk_folder(tmp_path / "a.pdf"), chunk_folder(tmp_path / "b.pdf")
    assert [r["text"] for r in a] == [r["text"] for r in b]
    assert not {r["id"] for r in a} & {r["id"] for r in b}
    assert a[0]["id"] == node_id("a.pdf", a[0]["text"])


def test_node_id():
    base = node_id("a.pdf", "some text")
    assert re.fullmatch(r"[0-9a-f]{16}", base)
    assert node_id("a.pdf", "some text") == base
    assert node_id("a.pdf", "other text") != base
    assert node_id("b.pdf", "some text") != base
    assert node_id("a.pdf", "some text", occurrence=1) != base
    assert node_id("a.pdf", "some text", occurrence=0) == base


def test_repeated_text_gets_distinct_ids():
    from llama_index.core import Document

    # Two pages of one file with the same text (a running header page, say) give twin chunks.
    pages = [
        Document(text=topics["pass"], metadata={"file_name": "twice.pdf", "page_label": str(n)})
        for n in (1, 2)
    ]
    records = split_documents(pages, SMALL)
    texts = [r["text"] for r in records]
    assert len(texts) == 2 * len(set(texts))
    assert len({r["id"] for r in records}) == len(records)
    assert records[0]["id"] == node_id("twice.pdf", texts[0])
    assert records[len(set(texts))]["id"] == node_id("twice.pdf", texts[0], occurrence=1)
    assert [r["page"] for r in records] == ["1"] * len(set(texts)) + ["2"] * len(set(texts))


def test_blank_documents_give_no_chunks():
    from llama_index.core import Document

    pages = [Document(text="   \n ", metadata={"file_name": "blank.txt"})]
    assert split_documents(pages, SMALL) == []


def test_smaller_chunk_size_gives_more_chunks(documents):
    small = split_documents(documents, cfg("chunk", chunk_size=64, chunk_overlap=8))
    large = split_documents(documents, cfg("chunk", chunk_size=256, chunk_overlap=8))
    assert len(small) > len(large) >= 1


def test_overlap_repeats_text_between_neighbours(documents):
    none = split_documents(documents, cfg("chunk", chunk_size=64, chunk_overlap=0))
    some = split_documents(documents, cfg("chunk", chunk_size=64, chunk_overlap=32))
    assert sum(len(r["text"]) for r in some) > sum(len(r["text"]) for r in none)


def test_html_chunks_do_not_depend_on_the_folder(tmp_path):
    page = "<html><body><p>" + "Sets hold unique items. " * 200 + "</p></body></html>"
    config = cfg("chunk", chunk_size=64, chunk_overlap=8, extensions=[".html"])
    chunks = []
    for name in ("a", "a-much-longer-folder-name-than-the-first"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "sets.html").write_text(page)
        chunks.append(split_documents(read_documents(folder, config.extensions), config))
    assert len(chunks[0]) > 1
    assert chunks[0] == chunks[1]
    assert "<p>" not in chunks[0][0]["text"]


# --- the stage --------------------------------------------------------------------------------


def test_stage_params():
    assert chunk.PARAMS == {"chunk": ChunkConfig}


@pytest.fixture
def stage_dir(tmp_path) -> Path:
    """A working directory with data/raw/<split>/ and a params.yaml holding only `chunk`."""
    (tmp_path / "data/raw/train").mkdir(parents=True)
    (tmp_path / "data/raw/validation").mkdir(parents=True)
    (tmp_path / "data/raw/train/loops.pdf").write_bytes(pdf_bytes("for", "while"))
    (tmp_path / "data/raw/train/skipped.txt").write_text("not in chunk.extensions")
    (tmp_path / "data/raw/validation/lambda.pdf").write_bytes(pdf_bytes("lambda"))
    chunk_section = {**cfg("chunk").model_dump(), "chunk_size": 96, "chunk_overlap": 8}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"chunk": chunk_section}))
    return tmp_path


def test_stage_writes_chunks_of_both_splits(stage_dir, monkeypatch, capsys):
    monkeypatch.chdir(stage_dir)
    chunk.main()  # reads the only section it lists: no other section in params.yaml
    out = capsys.readouterr().out.splitlines()
    for split, line in zip(("train", "validation"), out, strict=True):
        written = [json.loads(x) for x in (stage_dir / f"data/chunks/{split}.jsonl").open()]
        expected = chunk_folder(stage_dir / "data/raw" / split)
        assert written == expected
        assert re.fullmatch(rf"{split}\s+\d+ pages ->\s+{len(expected)} chunks", line)
    assert sorted(p.name for p in (stage_dir / "data/chunks").iterdir()) == [
        "skipped.json",
        "train.jsonl",
        "validation.jsonl",
    ]
    assert json.loads((stage_dir / "data/chunks/skipped.json").read_text()) == []
    metrics = json.loads((stage_dir / "metrics/chunk.json").read_text())
    assert metrics == {
        "train": {"pages": metrics["train"]["pages"], "chunks": metrics["train"]["chunks"]},
        "validation": {"pages": 1, "chunks": len(chunk_folder(stage_dir / "data/raw/validation"))},
        "skipped": 0,
        "reasons": {},
    }


def test_stage_error_is_one_line(stage_dir, monkeypatch, capsys):
    (stage_dir / "data/raw/validation/lambda.pdf").unlink()
    monkeypatch.chdir(stage_dir)
    with pytest.raises(SystemExit) as exit_:
        run_stage("chunk", chunk.main)  # as `python -m embedtune.chunk` runs it
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("embedtune chunk: error: data/raw/validation: no documents")
    assert len(err.splitlines()) == 1
    assert not (stage_dir / "data/chunks/validation.jsonl").exists()


@pytest.mark.parametrize("split", ["train", "validation"])
def test_a_missing_split_folder_says_to_run_download(stage_dir, monkeypatch, capsys, split):
    shutil.rmtree(stage_dir / "data/raw" / split)
    monkeypatch.chdir(stage_dir)
    with pytest.raises(SystemExit) as exit_:
        run_stage("chunk", chunk.main)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"embedtune chunk: error: data/raw/{split} not found: run `dvc repro download` first\n"
    )
    assert not (stage_dir / "data/chunks").exists()
