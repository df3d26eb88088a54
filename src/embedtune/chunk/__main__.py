"""Stage `chunk`: read data/raw/<split>/ and split it into text nodes with content-derived ids.

Usage: python -m embedtune.chunk   (reads params.yaml; run by `dvc repro`)

Reads with LlamaIndex's `SimpleDirectoryReader` and splits with its `SentenceSplitter`; writes
data/chunks/<split>.jsonl, one node a line: id, text, file name and page.

A file that cannot be read (`embedtune.reading.bad_documents`) stops the stage with one line
naming it (`chunk.on_bad_document: fail`), or is left out (`skip`): listed with its reason in
data/chunks/skipped.json and counted in metrics/chunk.json. Nothing is written unless every
split keeps a readable document.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TextIO

from embedtune import io
from embedtune.chunk.splitting import split_documents
from embedtune.config import ChunkConfig, load_params
from embedtune.errors import EmbedtuneError
from embedtune.reading.bad_documents import BadDocument
from embedtune.reading.readers import Limits, no_documents, read_each
from embedtune.stage import run_stage

PARAMS = {"chunk": ChunkConfig}


def check_raw_folders() -> None:
    for split in io.SPLITS:  # `download` writes both, or neither
        if not (io.RAW_DIR / split).is_dir():
            raise io.not_found(io.RAW_DIR / split)


def chunk_split(
    split: str, cfg: ChunkConfig, out: TextIO, stopping: bool = False
) -> tuple[dict, list[BadDocument]]:
    """Split the split's files one at a time into `out` (one node record a line), so only one
    file's text is held at once; returns the counts and the bad files. Once the stage is
    `stopping` (a bad file under `fail`), files are only read, to name every bad one."""
    pages = chunks = 0
    bad: list[BadDocument] = []
    for read in read_each(io.RAW_DIR / split, cfg.extensions, Limits.of(cfg)):
        if isinstance(read, BadDocument):
            bad.append(read)
            stopping = stopping or cfg.on_bad_document == "fail"
        elif not stopping:
            records = split_documents(read, cfg)
            pages, chunks = pages + len(read), chunks + len(records)
            out.writelines(
                json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records
            )
    return {"pages": pages, "chunks": chunks}, bad


def check_outcome(
    counts: dict[str, dict], bad: dict[str, list[BadDocument]], cfg: ChunkConfig
) -> None:
    """Stop on a bad file under `fail`, or on a split left without a readable document."""
    every_bad = [b for split in io.SPLITS for b in bad[split]]
    if every_bad and cfg.on_bad_document == "fail":
        more = f" ({len(every_bad) - 1} more bad files)" if len(every_bad) > 1 else ""
        raise EmbedtuneError(
            f"{every_bad[0]}{more}; or set chunk.on_bad_document=skip to leave them out"
        )
    for split in io.SPLITS:
        if not bad[split] and not counts[split]["pages"]:
            raise no_documents(io.RAW_DIR / split, cfg.extensions)
        if not counts[split]["pages"]:
            left_out = "; ".join(f"{b.name}: {b.reason}" for b in bad[split])
            raise EmbedtuneError(
                f"{io.RAW_DIR / split}: no readable document left ({left_out}); "
                "add readable documents to this split"
            )


def skip_counts(bad: list[BadDocument]) -> dict:
    return {"skipped": len(bad), "reasons": dict(sorted(Counter(b.kind for b in bad).items()))}


def main() -> None:
    params = load_params(PARAMS)
    check_raw_folders()
    counts, bad = {}, {split: [] for split in io.SPLITS}
    with io.atomic_folder(io.CHUNKS_DIR) as folder:  # takes data/chunks' place only if all succeed
        for split in io.SPLITS:
            stopping = params.chunk.on_bad_document == "fail" and any(bad.values())
            with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as out:
                counts[split], bad[split] = chunk_split(split, params.chunk, out, stopping)
        check_outcome(counts, bad, params.chunk)
        every_bad = [b for split in io.SPLITS for b in bad[split]]
        io.write_json(folder / "skipped.json", [b.record() for b in every_bad])
    for split in io.SPLITS:
        print(
            f"{split:<10} {counts[split]['pages']:>4} pages -> {counts[split]['chunks']:>5} chunks"
        )
    io.write_json(io.METRICS_DIR / "chunk.json", {**counts, **skip_counts(every_bad)})
    for problem in every_bad:
        print(f"skipped    {problem}")


if __name__ == "__main__":
    run_stage("chunk", main)
