"""Reading real rendered PDFs and splitting them into chunks with content-derived ids."""

from __future__ import annotations

import re
from pathlib import Path
from pydoc_data.topics import topics

import pytest

from embedtune.chunk import html_text, node_id, read_documents, split_documents
from embedtune.config import ChunkConfig
from embedtune.errors import EmbedtuneError
from embedtune.pdf import render_pdf

SMALL = ChunkConfig(chunk_size=96, chunk_overlap=8)


def pdf_bytes(*names: str) -> bytes:
    return render_pdf("Python reference", [(n, topics[n]) for n in names])


@pytest.fixture(scope="module")
def pdf_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("raw")
    (folder / "loops.pdf").write_bytes(pdf_bytes("for", "while"))
    (folder / "notes.txt").write_text("not a pdf: ignored by extension")
    return folder


@pytest.fixture(scope="module")
def documents(pdf_dir) -> list:
    return read_documents(pdf_dir, [".pdf"])


def chunk_folder(folder: Path, cfg: ChunkConfig = SMALL) -> list[dict]:
    return split_documents(read_documents(folder, [".pdf"]), cfg)


def test_reads_only_matching_extensions(documents):
    assert documents
    assert {d.metadata["file_name"] for d in documents} == {"loops.pdf"}
    text = " ".join(d.text for d in documents)
    assert 'The "for" statement' in text
    assert 'The "while" statement' in text


def test_chunk_records(documents):
    records = split_documents(documents, SMALL)
    assert len(records) > 3
    for r in records:
        assert set(r) == {"id", "text", "file_name", "page"}
        assert re.fullmatch(r"[0-9a-f]{16}", r["id"])
        assert r["text"] == r["text"].strip() != ""
        assert r["file_name"] == "loops.pdf"
        assert r["page"] is not None
    assert len({r["id"] for r in records}) == len(records)


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


def test_smaller_chunk_size_gives_more_chunks(documents):
    small = split_documents(documents, ChunkConfig(chunk_size=64, chunk_overlap=8))
    large = split_documents(documents, ChunkConfig(chunk_size=256, chunk_overlap=8))
    assert len(small) > len(large) >= 1


def test_empty_folder_names_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no pdf here")
    with pytest.raises(EmbedtuneError, match=re.escape(str(tmp_path)) + ": no documents .*pdf"):
        read_documents(tmp_path, [".pdf"])


def test_missing_folder_names_folder(tmp_path):
    folder = tmp_path / "absent"
    with pytest.raises(EmbedtuneError, match=re.escape(str(folder))):
        read_documents(folder, [".pdf"])


def test_html_text_keeps_visible_text_only():
    page = """<!doctype html><html><head><title>Sets</title><style>p {color: red}</style>
    <script>var hidden = "tracking code";</script></head>
    <body><!-- nav --><h1>Sets</h1><p>A set holds   <b>unique</b>
    items.</p><noscript>Enable JavaScript</noscript><ul><li>add()</li><li>discard()</li></ul>
    </body></html>"""
    assert html_text(page) == "Sets\nA set holds unique items.\nadd()\ndiscard()"


def test_html_chunks_do_not_depend_on_the_folder(tmp_path):
    page = "<html><body><p>" + "Sets hold unique items. " * 200 + "</p></body></html>"
    cfg = ChunkConfig(chunk_size=64, chunk_overlap=8, extensions=[".html"])
    chunks = []
    for name in ("a", "a-much-longer-folder-name-than-the-first"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "sets.html").write_text(page)
        chunks.append(split_documents(read_documents(folder, cfg.extensions), cfg))
    assert len(chunks[0]) > 1
    assert chunks[0] == chunks[1]
    assert "<p>" not in chunks[0][0]["text"]
