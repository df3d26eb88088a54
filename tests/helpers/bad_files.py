"""Broken and hostile documents, built for real: fpdf2 PDFs cut, encrypted by pypdf, emptied
of text, made to inflate; raw bytes; deep HTML; a sparse 200 MB text file."""

from __future__ import annotations

import io
import random
import zlib
from pathlib import Path

from fpdf import FPDF
from pypdf import PdfReader, PdfWriter
from pypdf.generic import NameObject, StreamObject

from embedtune.download.pdf import render_pdf

WORDS = "loop body item sequence condition break continue else range iterator".split()


def good_pdf() -> bytes:
    """About 25 kB of varied text, so that 3,000 bytes are a fraction of it."""
    pick = random.Random(1).choice
    sections = [(f"Part {n}", " ".join(pick(WORDS) for _ in range(1500))) for n in range(4)]
    return render_pdf("Loops", sections)


def _rewrite(pdf: bytes, edit) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    edit(writer)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def encrypted_pdf(user_password: str = "secret") -> bytes:
    return _rewrite(good_pdf(), lambda w: w.encrypt(user_password, "owner-secret"))


def scanned_pdf() -> bytes:
    """One page holding only a picture of text: no text layer."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (400, 100), "white")
    ImageDraw.Draw(picture).text((10, 40), "A scanned page of text", fill="black")
    pdf = FPDF()
    pdf.add_page()
    pdf.image(picture, x=10, y=10, w=180)
    return bytes(pdf.output())


def bomb_pdf(inflated_mb: int = 200) -> bytes:
    """A PDF whose page content (fonts and all) is a Flate stream inflating to `inflated_mb`."""
    squeeze, block, parts = zlib.compressobj(9), b"BT /F1 12 Tf (x) Tj ET\n" * 45_000, []
    for _ in range(inflated_mb):
        parts.append(squeeze.compress(block))
    parts.append(squeeze.flush())

    def inflate(writer: PdfWriter) -> None:
        stream = StreamObject()
        stream.set_data(b"".join(parts))
        stream[NameObject("/Filter")] = NameObject("/FlateDecode")
        writer.pages[0][NameObject("/Contents")] = writer._add_object(stream)

    return _rewrite(good_pdf(), inflate)


def many_pages_pdf(pages: int) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(100, 100)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head>"
    b"<body><h1>Forbidden</h1><p>Please log in.</p></body></html>\n"
)


def deep_html(depth: int = 100_000) -> str:
    return "<div>" * depth + "deep" + "</div>" * depth


def sparse_text(path: Path, megabytes: int = 200) -> Path:
    """A `megabytes` text file that takes no disk: it is only ever measured, never read."""
    with path.open("wb") as f:
        f.truncate(megabytes << 20)
    return path


# name -> (bytes, the kind of BadDocument it is, words its message holds)
BAD_FILES = {
    "random.pdf": (random.Random(0).randbytes(5000), "not_pdf", "not a PDF"),
    "cut.pdf": (good_pdf()[:3000], "truncated", "truncated PDF"),
    "empty.pdf": (b"", "empty", "empty (0 bytes)"),
    "error-page.pdf": (HTML_ERROR_PAGE, "html_page", "an HTML page"),
    "locked.pdf": (encrypted_pdf(), "encrypted", "encrypted PDF"),
    "scan.pdf": (scanned_pdf(), "no_text_layer", "no text layer, probably a scan"),
    "latin1.txt": (
        "Caf\xe9 au lait, cr\xe8me br\xfbl\xe9e.".encode("latin-1"),
        "not_utf8",
        "UTF-8",
    ),
    "broken.docx": (b"a Word 97 file renamed .docx", "not_docx", "not a Word .docx"),
    "blank.md": (b"  \n\t\n", "no_text", "no text"),
}


def write_bad_files(folder: Path, names=BAD_FILES) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(BAD_FILES[name][0])
