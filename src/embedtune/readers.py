"""Reading documents into LlamaIndex `Document`s: every file type `chunk.extensions` allows.

PDF, txt, md and docx go through LlamaIndex's `SimpleDirectoryReader`; HTML through `HtmlText`,
which keeps the visible text only.
"""

from __future__ import annotations

import re
from pathlib import Path

from llama_index.core.readers.base import BaseReader
from llama_index.core.schema import Document

from embedtune.errors import EmbedtuneError

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


class HtmlText(BaseReader):
    """LlamaIndex reader for .html files. Its own HTML reader keeps script text and puts the
    absolute path in the metadata, which would move chunk bounds between checkouts."""

    def load_data(self, file: Path, extra_info: dict | None = None) -> list[Document]:
        text = html_text(Path(file).read_text(encoding="utf-8", errors="replace"))
        return [Document(text=text, metadata=dict(extra_info or {}))]


def read_documents(folder: Path, extensions: list[str]) -> list:
    """Load every file with one of `extensions` under `folder`, in sorted order."""
    from llama_index.core import SimpleDirectoryReader

    wanted = {e.lower() for e in extensions}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in wanted)
    if not files:
        raise EmbedtuneError(
            f"{folder}: no documents with extension {', '.join(extensions)} "
            "(check data.* and chunk.extensions in conf/)"
        )
    # Only the file name as metadata: paths and file dates would change ids and chunk bounds.
    reader = SimpleDirectoryReader(
        input_files=[str(f) for f in files],
        file_metadata=lambda path: {"file_name": Path(path).name},
        file_extractor={".html": HtmlText(), ".htm": HtmlText()},
        raise_on_error=True,
    )
    return reader.load_data()
