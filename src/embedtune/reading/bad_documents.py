"""Documents that cannot be read: the reason in plain words and what to do about it.

`sniff` looks at a file's bytes only (no parser): empty, not what its extension says (an HTML
page saved as .pdf), a PDF without its end marker (cut off), a text file that is not UTF-8.
The readers (`embedtune.reading.readers`) raise the same `BadDocument` for what only parsing shows:
encrypted, no text layer, past a size bound.
"""

from __future__ import annotations

import codecs
import zipfile
from pathlib import Path

from embedtune.errors import EmbedtuneError

PDF_MAGIC = b"%PDF-"
HEADER_WINDOW = 1024  # a PDF header may sit anywhere in the first 1,024 bytes (as readers allow)
TEXT_EXTENSIONS = (".txt", ".md", ".html", ".htm")  # the file is the text: its size bounds it
UTF8_EXTENSIONS = (".txt", ".md")  # HTML stays lenient: bad bytes become U+FFFD
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml", b"<!--")
_BLOCK = 1 << 20


class BadDocument(EmbedtuneError):
    """A document that cannot be read. `kind` is a short key (counted in metrics/chunk.json)."""

    def __init__(self, name: str, kind: str, reason: str, fix: str):
        self.name, self.kind, self.reason, self.fix = name, kind, reason, fix
        super().__init__(f"{name}: {reason}; {fix}")

    def record(self) -> dict:
        return {"file": self.name, "kind": self.kind, "reason": self.reason}


def not_a_pdf(name: str, head: bytes, fix: str = "") -> BadDocument:
    """The error for bytes that should be a PDF and are not; an HTML page is named as such."""
    if head.lstrip().lower().startswith(_HTML_STARTS):
        return BadDocument(
            name,
            "html_page",
            "not a PDF but an HTML page (probably an error or login page saved as .pdf)",
            fix or "download the real PDF, or remove the file",
        )
    return BadDocument(
        name,
        "not_pdf",
        f"not a PDF (it starts with {head[:16]!r}, not %PDF-)",
        fix or "replace it with the real PDF, or remove the file",
    )


def empty(name: str) -> BadDocument:
    return BadDocument(name, "empty", "empty (0 bytes)", "replace it with the real document")


def sniff(path: Path, name: str) -> None:
    """Raise `BadDocument` if the bytes of `path` cannot be the document its extension says."""
    size = path.stat().st_size
    if size == 0:
        raise empty(name)
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        _sniff_pdf(path, name, size)
    elif suffix == ".docx" and not zipfile.is_zipfile(path):
        raise BadDocument(
            name,
            "not_docx",
            "not a Word .docx file (a .docx is a zip archive; this is damaged or another format)",
            "save it again as .docx from its editor, or remove the file",
        )
    elif suffix in UTF8_EXTENSIONS:
        _sniff_utf8(path, name)


def _sniff_pdf(path: Path, name: str, size: int) -> None:
    with path.open("rb") as f:
        head = f.read(HEADER_WINDOW)
        f.seek(max(0, size - HEADER_WINDOW))
        tail = f.read()
    if PDF_MAGIC not in head:
        raise not_a_pdf(name, head)
    if b"%%EOF" not in tail:
        raise BadDocument(
            name,
            "truncated",
            f"truncated PDF (no %%EOF end marker in its last {HEADER_WINDOW} bytes)",
            "download or copy it again",
        )


def _sniff_utf8(path: Path, name: str) -> None:
    """Decode in blocks, so a huge file costs one block of memory; all-whitespace is no text."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, has_text = 0, False
    with path.open("rb") as f:
        while True:
            block = f.read(_BLOCK)
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                raise BadDocument(
                    name,
                    "not_utf8",
                    f"not valid UTF-8 (byte {err.object[err.start]:#04x} "
                    f"at offset {offset + err.start:,})",
                    "convert it, e.g. `iconv -f latin1 -t utf-8`",
                ) from None
            has_text = has_text or bool(text.strip())
            if not block:
                break
            offset += len(block)
    if not has_text:
        raise no_text(name, "only whitespace")


def no_text(name: str, why: str) -> BadDocument:
    return BadDocument(name, "no_text", f"no text ({why})", "remove the file")
