"""Stage `chunk`: read data/raw/<split>/ and split it into text nodes with content-derived ids.

Usage: python -m embedtune.chunk   (reads params.yaml; run by `dvc repro`)

Reads with LlamaIndex's `SimpleDirectoryReader` and splits with its `SentenceSplitter`; writes
data/chunks/<split>.jsonl, one node a line: id, text, file name and page.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from llama_index.core.readers.base import BaseReader
from llama_index.core.schema import Document

from embedtune import io
from embedtune.config import ChunkConfig, load_params
from embedtune.errors import EmbedtuneError, run_stage


def node_id(source: str, text: str, occurrence: int = 0) -> str:
    """A stable id from the node's source file and text (and its repeat count, for twins)."""
    key = f"{source}\0{text}\0{occurrence}" if occurrence else f"{source}\0{text}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


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


def split_documents(documents: list, cfg: ChunkConfig) -> list[dict]:
    """Split LlamaIndex documents into node records with ids derived from source and text."""
    from llama_index.core.node_parser import SentenceSplitter

    splitter = SentenceSplitter(chunk_size=cfg.chunk_size, chunk_overlap=cfg.chunk_overlap)
    records, seen = [], {}
    for node in splitter.get_nodes_from_documents(documents):
        text = node.get_content().strip()
        if not text:
            continue
        source = node.metadata.get("file_name", "")
        key = (source, text)
        seen[key] = seen.get(key, -1) + 1
        records.append(
            {
                "id": node_id(source, text, seen[key]),
                "text": text,
                "file_name": source,
                "page": node.metadata.get("page_label"),
            }
        )
    return records


def main() -> None:
    params = load_params()
    for split in io.SPLITS:
        documents = read_documents(io.RAW_DIR / split, params.chunk.extensions)
        records = split_documents(documents, params.chunk)
        io.write_jsonl(io.CHUNKS_DIR / f"{split}.jsonl", records)
        print(f"{split:<10} {len(documents):>4} pages -> {len(records):>5} chunks")


if __name__ == "__main__":
    run_stage("chunk", main)
