"""Reading documents into LlamaIndex `Document`s: every file type `chunk.extensions` allows.

Every file goes through LlamaIndex's `SimpleDirectoryReader`, one at a time so that a failure
names its file: txt, md and docx with its own readers, PDF with `PdfText` (LlamaIndex's page
documents, plus the checks below), HTML with `HtmlText` (the visible text only).

A document that cannot be read raises `BadDocument` with the reason. Memory stays bounded
(`Limits`, from chunk.*): files past `max_file_mb` are not opened, text files past
`max_text_mb` are not read, a PDF stops at `max_pages` pages or `max_text_mb` of text, each
compressed PDF stream inflates to at most pypdf's 75 MB, and HTML nested deeper than
`max_html_depth` elements is refused before it is parsed into a tree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from llama_index.core.readers.base import BaseReader
from llama_index.core.schema import Document

from embedtune.errors import EmbedtuneError
from embedtune.reading.bad_documents import TEXT_EXTENSIONS, BadDocument, no_text, sniff

MB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What a readable document may be; past any of these it is a `BadDocument`."""

    max_file_mb: float = 256  # a file's size on disk
    max_pages: int = 5000  # pages of a PDF
    max_text_mb: float = 32  # text of one document (a text file's size, a PDF's extracted text)
    max_html_depth: int = 512  # elements nested in an HTML page

    @classmethod
    def of(cls, chunk) -> Limits:
        """The bounds a `ChunkConfig` sets."""
        return cls(chunk.max_file_mb, chunk.max_pages, chunk.max_text_mb, chunk.max_html_depth)


class Unreadable(Exception):
    """Raised inside a reader; `read_document` turns it into a `BadDocument` naming the file."""

    def __init__(self, kind: str, reason: str, fix: str):
        super().__init__(reason)
        self.kind, self.reason, self.fix = kind, reason, fix


HTML_BLOCKS = [
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
    "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p",
    "pre", "section", "table", "td", "th", "tr", "ul",
]  # fmt: skip


def html_text(markup: str) -> str:
    """The visible text of an HTML page: no tags, scripts, styles or head; one block per line."""
    from bs4 import BeautifulSoup
    from bs4.element import PreformattedString

    soup = BeautifulSoup(markup, "html.parser")
    for hidden in soup(["head", "script", "style", "noscript", "template"]):
        hidden.decompose()
    for text in soup.find_all(string=True):
        if isinstance(text, PreformattedString):  # doctype, comments, CDATA
            text.extract()
        else:
            text.replace_with(re.sub(r"\s+", " ", text))  # as a browser collapses whitespace
    for block in soup(HTML_BLOCKS):
        block.append("\n")  # inline tags join their neighbours; blocks end a line
    lines = (line.strip() for line in soup.get_text().splitlines())
    return "\n".join(line for line in lines if line)


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
         "track", "wbr"}  # fmt: skip
_SELF_CLOSING = {"p", "li", "dt", "dd", "tr", "td", "th", "option"}  # a twin closes the open one


class _NestingDepth(HTMLParser):
    """Streams the markup with a stack of open elements (no tree), stopping past `limit`."""

    def __init__(self, limit: int):
        super().__init__(convert_charrefs=False)
        self.limit, self.open = limit, []

    def handle_starttag(self, tag, attrs):
        if tag in _VOID:
            return
        if tag in _SELF_CLOSING and tag in self.open:
            self.handle_endtag(tag)
        self.open.append(tag)
        if len(self.open) > self.limit:
            raise Unreadable(
                "too_deep",
                f"HTML nested more than chunk.max_html_depth ({self.limit}) elements deep",
                "raise chunk.max_html_depth if the page is genuine, or remove the file",
            )

    def handle_endtag(self, tag):
        if tag in self.open:
            while self.open.pop() != tag:
                pass


class HtmlText(BaseReader):
    """LlamaIndex reader for .html files. Its own HTML reader keeps script text and puts the
    absolute path in the metadata, which would move chunk bounds between checkouts."""

    def __init__(self, max_depth: int = Limits.max_html_depth):
        super().__init__()
        self._max_depth = max_depth

    def load_data(self, file: Path, extra_info: dict | None = None) -> list[Document]:
        markup = Path(file).read_text(encoding="utf-8", errors="replace")
        depth = _NestingDepth(self._max_depth)  # the tree below costs time quadratic in depth
        depth.feed(markup)
        depth.close()
        return [Document(text=html_text(markup), metadata=dict(extra_info or {}))]


class PdfText(BaseReader):
    """LlamaIndex's PDF reader (one document per page, text by pypdf, the same metadata), with
    a named reason for what it cannot read and bounds on pages and text."""

    def __init__(self, max_pages: int = Limits.max_pages, max_text_mb: float = Limits.max_text_mb):
        super().__init__()
        self._max_pages, self._max_text_mb = max_pages, max_text_mb

    def load_data(self, file: Path, extra_info: dict | None = None) -> list[Document]:
        from pypdf.errors import LimitReachedError, PdfReadError

        try:
            return self._pages(Path(file), extra_info or {})
        except LimitReachedError:
            raise Unreadable(
                "decompression_bomb",
                "a compressed PDF stream inflates past pypdf's 75 MB limit (a decompression bomb?)",
                "remove the file, or re-save it from a trusted viewer",
            ) from None
        except PdfReadError as err:
            raise Unreadable(
                "damaged", f"damaged PDF (pypdf: {err})", "download or export it again"
            ) from None

    def _pages(self, file: Path, extra_info: dict) -> list[Document]:
        import pypdf

        pdf = pypdf.PdfReader(file)
        if pdf.is_encrypted and not _opens_without_password(pdf):
            raise Unreadable(
                "encrypted",
                "encrypted PDF (it needs a password)",
                "save an unprotected copy, e.g. `qpdf --decrypt --password=... in.pdf out.pdf`",
            )
        if len(pdf.pages) > self._max_pages:
            raise Unreadable(
                "too_many_pages",
                f"{len(pdf.pages):,} pages, more than chunk.max_pages ({self._max_pages:,})",
                "split the PDF, or raise chunk.max_pages",
            )
        documents, chars = [], 0
        for number, page in enumerate(pdf.pages):
            text = page.extract_text()
            chars += len(text)
            if chars > self._max_text_mb * MB:
                raise Unreadable(
                    "too_much_text",
                    f"more than chunk.max_text_mb ({self._max_text_mb:g}) MB of text "
                    f"by page {number + 1}",
                    "split the PDF, or raise chunk.max_text_mb",
                )
            metadata = {"page_label": pdf.page_labels[number], "file_name": file.name}
            documents.append(Document(text=text, metadata={**metadata, **extra_info}))
        if not any(d.text.strip() for d in documents):
            raise Unreadable(
                "no_text_layer",
                "no text layer, probably a scan",
                "run OCR on it first (e.g. `ocrmypdf in.pdf out.pdf`), or remove the file",
            )
        return documents


def _opens_without_password(pdf) -> bool:
    """Many PDFs are encrypted with an empty user password (only editing is restricted)."""
    try:
        return bool(pdf.decrypt(""))
    except Exception:  # noqa: BLE001 (pypdf raises several types, e.g. a missing AES library)
        return False


def _size_problem(path: Path, name: str, limits: Limits) -> BadDocument | None:
    size, text_file = path.stat().st_size, path.suffix.lower() in TEXT_EXTENSIONS
    key, bound = (
        ("max_text_mb", limits.max_text_mb) if text_file else ("max_file_mb", limits.max_file_mb)
    )
    if size <= bound * MB:
        return None
    return BadDocument(
        name,
        "too_large",
        f"{size / MB:,.0f} MB, more than chunk.{key} ({bound:g})",
        f"split it, or raise chunk.{key}",
    )


def read_document(path: Path, name: str, limits: Limits = Limits()) -> list[Document]:
    """The LlamaIndex documents of one file, or `BadDocument` naming `name` and the reason."""
    from llama_index.core import SimpleDirectoryReader

    if (problem := _size_problem(path, name, limits)) is not None:
        raise problem
    sniff(path, name)
    # Only the file name as metadata: paths and file dates would change ids and chunk bounds.
    reader = SimpleDirectoryReader(
        input_files=[str(path)],
        file_metadata=lambda p: {"file_name": Path(p).name},
        file_extractor={
            ".pdf": PdfText(limits.max_pages, limits.max_text_mb),
            ".html": HtmlText(limits.max_html_depth),
            ".htm": HtmlText(limits.max_html_depth),
        },
        raise_on_error=True,
    )
    try:
        documents = reader.load_data()
    except Exception as err:  # noqa: BLE001 (LlamaIndex wraps every reader error alike)
        cause = err.__cause__ or err
        if isinstance(cause, Unreadable):
            raise BadDocument(name, cause.kind, cause.reason, cause.fix) from None
        raise BadDocument(
            name,
            "unreadable",
            f"cannot be read ({type(cause).__name__}: {cause})",
            "open it in its editor and save it again, or remove the file",
        ) from None
    if not any(d.text.strip() for d in documents):
        raise no_text(name, "the reader found none")
    return documents


def read_each(
    folder: Path, extensions: list[str], limits: Limits = Limits()
) -> Iterator[list[Document] | BadDocument]:
    """The files under `folder` with one of `extensions`, in sorted order, one at a time: each
    file's documents, or the `BadDocument` saying why it cannot be read."""
    wanted = {e.lower() for e in extensions}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in wanted):
        try:
            yield read_document(path, path.as_posix(), limits)
        except BadDocument as problem:
            yield problem


def read_all(
    folder: Path, extensions: list[str], limits: Limits = Limits()
) -> tuple[list[Document], list[BadDocument]]:
    """Every document of `read_each`, and the files that cannot be read."""
    documents, bad = [], []
    for read in read_each(folder, extensions, limits):
        if isinstance(read, BadDocument):
            bad.append(read)
        else:
            documents.extend(read)
    return documents, bad


def read_documents(folder: Path, extensions: list[str], limits: Limits = Limits()) -> list:
    """Load every file under `folder`, in sorted order; the first that cannot be read raises."""
    documents, bad = read_all(folder, extensions, limits)
    if bad:
        raise bad[0]
    if not documents:
        raise no_documents(folder, extensions)
    return documents


def no_documents(folder: Path, extensions: list[str]) -> EmbedtuneError:
    return EmbedtuneError(
        f"{folder}: no documents with extension {', '.join(extensions)} "
        "(check data.* and chunk.extensions in conf/)"
    )
