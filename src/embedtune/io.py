"""Atomic file writes and the fixed paths every stage agrees on."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from embedtune.errors import EmbedtuneError

RAW_DIR = Path("data/raw")
MANIFEST = Path("data/manifest.json")
CHUNKS_DIR = Path("data/chunks")
QA_DIR = Path("data/qa")
EMBEDDINGS_DIR = Path("data/embeddings")
MINED_DIR = Path("data/mined")
TUNED_DIR = Path("models/tuned")
RETRIEVER_DIR = Path("models/retriever")
METRICS_DIR = Path("metrics")
SPLITS = ("train", "validation")
CACHE_ENV = "EMBEDTUNE_CACHE_DIR"


def cache_root() -> Path:
    """`$EMBEDTUNE_CACHE_DIR`, else `~/.cache/embedtune`: shared by every checkout."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "embedtune")


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_folder(path: Path | str) -> Iterator[Path]:
    """Yield a fresh folder beside `path`; it takes `path`'s place only if the block succeeds."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = tmp.with_name(tmp.name + ".old")
    try:
        yield tmp
        if path.exists():
            path.rename(old)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path | str, data: Any) -> None:
    """Write `data` as stable, sorted, indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(path: Path | str, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        with tmp.open("w") as f:
            for row in rows:
                f.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def write_csv(path: Path | str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    import csv

    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def load_qa(split: str) -> dict:
    """The `EmbeddingQAFinetuneDataset` dict that `synth` wrote for `split`."""
    path = QA_DIR / f"{split}.json"
    if not path.is_file():
        raise EmbedtuneError(f"{path} not found: run `dvc repro synth` first")
    return json.loads(path.read_text())
