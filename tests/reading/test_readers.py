"""Reading documents: real rendered PDFs, txt, md, docx and HTML (visible text only)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from embedtune.download.sources import LOCAL_EXTENSIONS, download_all
from embedtune.errors import EmbedtuneError
from embedtune.reading.readers import HtmlText, html_text, read_documents
from tests.helpers import cfg
from tests.helpers.documents import make_documents, pdf_bytes


@pytest.fixture(scope="module")
def pdf_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("raw")
    (folder / "loops.pdf").write_bytes(pdf_bytes("for", "while"))
    (folder / "notes.txt").write_text("not a pdf: ignored by extension")
    return folder


def test_reads_only_matching_extensions(pdf_dir):
    documents = read_documents(pdf_dir, [".pdf"])
    assert len(documents) >= 2  # one document per page
    assert {d.metadata["file_name"] for d in documents} == {"loops.pdf"}
    text = " ".join(d.text for d in documents)
    assert 'The "for" statement' in text
    assert 'The "while" statement' in text
    assert "not a pdf" not in text


def test_metadata_is_the_file_name_and_page_only(pdf_dir):
    """No path or file dates: they would change chunk ids between checkouts."""
    documents = read_documents(pdf_dir, [".pdf"])
    assert [d.metadata for d in documents] == [
        {"file_name": "loops.pdf", "page_label": str(n)} for n in range(1, len(documents) + 1)
    ]
    assert str(pdf_dir) not in repr([d.metadata for d in documents])


def test_extensions_match_in_any_case(tmp_path):
    (tmp_path / "LOUD.TXT").write_text("Shouted text.")
    (tmp_path / "quiet.txt").write_text("Quiet text.")
    documents = read_documents(tmp_path, [".txt"])
    assert [d.metadata["file_name"] for d in documents] == ["LOUD.TXT", "quiet.txt"]
    assert [d.text for d in read_documents(tmp_path, [".TXT"])] == ["Shouted text.", "Quiet text."]


def test_files_in_sorted_path_order_with_subfolders(tmp_path):
    for name in ("b.txt", "a/z.txt", "a.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(f"text of {name}")
    texts = [d.text for d in read_documents(tmp_path, [".txt"])]
    assert texts == ["text of a/z.txt", "text of a.txt", "text of b.txt"]  # sorted as paths


def test_empty_folder_names_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no pdf here")
    with pytest.raises(EmbedtuneError, match=re.escape(str(tmp_path)) + ": no documents .*pdf"):
        read_documents(tmp_path, [".pdf"])


def test_missing_folder_names_folder(tmp_path):
    folder = tmp_path / "absent"
    with pytest.raises(EmbedtuneError, match=re.escape(str(folder))):
        read_documents(folder, [".pdf"])


def test_every_local_type_is_read_offline(tmp_path):
    """What download copies from data.local_dir, the chunk stage reads: PDF, txt, md, html, docx."""
    documents = make_documents(tmp_path / "docs")
    data = cfg("data", train=[], validation=[], local_dir=str(documents))
    download_all(data, tmp_path / "raw")
    texts: dict[str, str] = {}
    for split in ("train", "validation"):
        for doc in read_documents(tmp_path / "raw" / split, list(LOCAL_EXTENSIONS)):
            name = doc.metadata["file_name"]
            texts[name] = texts.get(name, "") + doc.text
    assert sorted(texts) == ["dicts.md", "loops.pdf", "notes.txt", "sets.html", "strings.docx"]
    assert 'The "for" statement' in texts["loops.pdf"]
    assert "Strings are immutable." in texts["strings.docx"]
    assert "They support slicing." in texts["strings.docx"]
    assert "A dict maps keys to values." in texts["dicts.md"]
    assert texts["sets.html"] == "A set holds unique items."
    assert texts["notes.txt"].startswith("Lists are mutable sequences.")


def test_html_text_keeps_visible_text_only():
    page = """<!doctype html><html><head><title>Sets</title><style>p {color: red}</style>
    <script>var hidden = "tracking code";</script></head>
    <body><!-- nav --><h1>Sets</h1><p>A set holds   <b>unique</b>
    items.</p><noscript>Enable JavaScript</noscript><ul><li>add()</li><li>discard()</li></ul>
    <template><p>never shown</p></template></body></html>"""
    assert html_text(page) == "Sets\nA set holds unique items.\nadd()\ndiscard()"


def test_html_text_inline_tags_join_and_blocks_break():
    page = "<div>one<span>two</span></div><div>three<br>four</div><table><tr><td>a</td><td>b"
    assert html_text(page) == "onetwo\nthree\nfour\na\nb"


def test_html_reader_handles_both_extensions_and_bad_bytes(tmp_path):
    (tmp_path / "a.htm").write_bytes(b"<p>caf\xe9 au lait</p><script>x()</script>")
    (tmp_path / "b.html").write_text("<p>Second page.</p>")
    documents = read_documents(tmp_path, [".htm", ".html"])
    assert [d.text for d in documents] == ["caf\ufffd au lait", "Second page."]
    assert [d.metadata for d in documents] == [{"file_name": "a.htm"}, {"file_name": "b.html"}]


def test_html_reader_keeps_the_extra_info(tmp_path):
    (tmp_path / "p.html").write_text("<p>Hello</p>")
    (document,) = HtmlText().load_data(tmp_path / "p.html", extra_info={"file_name": "p.html"})
    assert (document.text, document.metadata) == ("Hello", {"file_name": "p.html"})
    assert HtmlText().load_data(tmp_path / "p.html")[0].metadata == {}
