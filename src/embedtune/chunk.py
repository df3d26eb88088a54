"""Stage `chunk`: read data/raw/<split>/ and split it into text nodes with content-derived ids.

Usage: python -m embedtune.chunk   (reads params.yaml; run by `dvc repro`)

Reads with LlamaIndex's `SimpleDirectoryReader` and splits with its `SentenceSplitter`; writes
data/chunks/<split>.jsonl, one node a line: id, text, file name and page.
"""

from __future__ import annotations

import hashlib

from embedtune import io
from embedtune.config import ChunkConfig, load_params
from embedtune.errors import run_stage
from embedtune.readers import read_documents

PARAMS = {"chunk": ChunkConfig}


def node_id(source: str, text: str, occurrence: int = 0) -> str:
    """A stable id from the node's source file and text (and its repeat count, for twins)."""
    key = f"{source}\0{text}\0{occurrence}" if occurrence else f"{source}\0{text}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


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
    params = load_params(PARAMS)
    for split in io.SPLITS:
        documents = read_documents(io.RAW_DIR / split, params.chunk.extensions)
        records = split_documents(documents, params.chunk)
        io.write_jsonl(io.CHUNKS_DIR / f"{split}.jsonl", records)
        print(f"{split:<10} {len(documents):>4} pages -> {len(records):>5} chunks")


if __name__ == "__main__":
    run_stage("chunk", main)
