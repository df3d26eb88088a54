"""Documents split into node records (id, text, file name, page) with LlamaIndex's
`SentenceSplitter`; ids derive from the source file and the text, so the same document gives the
same ids on every run.
"""

from __future__ import annotations

import hashlib

from embedtune.config import ChunkConfig


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
