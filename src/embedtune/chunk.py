"""Stage `chunk`: read data/raw/<split>/ and split it into text nodes with content-derived ids.

Usage: python -m embedtune.chunk   (reads params.yaml; run by `dvc repro`)

Reads with LlamaIndex's `SimpleDirectoryReader` and splits with its `SentenceSplitter`; writes
data/chunks/<split>.jsonl, one node a line: id, text, file name and page.

A file that cannot be read (`embedtune.bad_documents`) stops the stage with one line naming it
(`chunk.on_bad_document: fail`), or is left out (`skip`): listed with its reason in
data/chunks/skipped.json and counted in metrics/chunk.json. Nothing is written unless every
split keeps a readable document.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from embedtune import io
from embedtune.bad_documents import BadDocument
from embedtune.config import ChunkConfig, load_params
from embedtune.errors import EmbedtuneError, run_stage
from embedtune.readers import Limits, no_documents, read_all

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


def read_splits(cfg: ChunkConfig) -> tuple[dict[str, list], list[BadDocument]]:
    """The documents of each split, and the bad files left out (`skip`); `fail` raises."""
    for split in io.SPLITS:  # `download` writes both, or neither
        if not (io.RAW_DIR / split).is_dir():
            raise io.not_found(io.RAW_DIR / split)
    documents, bad = {}, {}
    for split in io.SPLITS:
        documents[split], bad[split] = read_all(io.RAW_DIR / split, cfg.extensions, Limits.of(cfg))
    every_bad = [b for split in io.SPLITS for b in bad[split]]
    if every_bad and cfg.on_bad_document == "fail":
        more = f" ({len(every_bad) - 1} more bad files)" if len(every_bad) > 1 else ""
        raise EmbedtuneError(
            f"{every_bad[0]}{more}; or set chunk.on_bad_document=skip to leave them out"
        )
    for split, read in documents.items():
        if not bad[split] and not read:
            raise no_documents(io.RAW_DIR / split, cfg.extensions)
        if not read:
            left_out = "; ".join(f"{b.name}: {b.reason}" for b in bad[split])
            raise EmbedtuneError(
                f"{io.RAW_DIR / split}: no readable document left ({left_out}); "
                "add readable documents to this split"
            )
    return documents, every_bad


def skip_counts(bad: list[BadDocument]) -> dict:
    return {"skipped": len(bad), "reasons": dict(sorted(Counter(b.kind for b in bad).items()))}


def main() -> None:
    params = load_params(PARAMS)
    documents, bad = read_splits(params.chunk)
    counts = {}
    for split in io.SPLITS:
        records = split_documents(documents[split], params.chunk)
        io.write_jsonl(io.CHUNKS_DIR / f"{split}.jsonl", records)
        counts[split] = {"pages": len(documents[split]), "chunks": len(records)}
        print(f"{split:<10} {len(documents[split]):>4} pages -> {len(records):>5} chunks")
    io.write_json(io.CHUNKS_DIR / "skipped.json", [b.record() for b in bad])
    io.write_json(io.METRICS_DIR / "chunk.json", {**counts, **skip_counts(bad)})
    for problem in bad:
        print(f"skipped    {problem}")


if __name__ == "__main__":
    run_stage("chunk", main)
