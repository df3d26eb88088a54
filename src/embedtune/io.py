"""Atomic file writes, checked reads, and the fixed paths every stage agrees on.

A pipeline file that is missing or damaged (truncated, half-written) is read through `reading`,
which turns the error into one line naming the file and the `dvc` command that restores it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from embedtune.errors import EmbedtuneError

PARAMS_FILE = Path("params.yaml")  # composed from CONF_DIR by `dvc exp run` or `make params`
CONF_DIR = Path("conf")
LOCK_FILE = Path("dvc.lock")
RAW_DIR = Path("data/raw")
MANIFEST = Path("data/manifest.json")
CHUNKS_DIR = Path("data/chunks")
QA_DIR = Path("data/qa")
EMBEDDINGS_DIR = Path("data/embeddings")
MINED_DIR = Path("data/mined")
TUNED_DIR = Path("models/tuned")
RETRIEVER_DIR = Path("models/retriever")
RETRIEVER_FILE = RETRIEVER_DIR / "retriever.json"  # what `select` ships
EXPORT_DIR = Path("models/export")
EXPORTED_MODEL_DIR = EXPORT_DIR / "model"  # the sentence-transformers folder
EXPORTED_RETRIEVER_DIR = EXPORT_DIR / "retriever"  # the shipped retriever as one folder
METRICS_DIR = Path("metrics")
BENCHMARKS_DIR = Path("benchmarks")  # labelled queries in BEIR layout; `eval` depends on it
SPLITS = ("train", "validation")
CACHE_ENV = "EMBEDTUNE_CACHE_DIR"
# What each stage writes (dvc.yaml's `outs`, `metrics` and `plots`): checked writable, and
# cleared of a killed run's temporaries, before the stage starts (`embedtune.stage`).
OUTPUTS = {
    "download": (RAW_DIR, MANIFEST),
    "chunk": (CHUNKS_DIR, METRICS_DIR / "chunk.json"),
    "synth": (QA_DIR, METRICS_DIR / "synth.json"),
    "embed": (EMBEDDINGS_DIR,),
    "mine": (MINED_DIR, METRICS_DIR / "mine.json"),
    "train": (  # dvclive's summary and plots
        TUNED_DIR,
        METRICS_DIR / "train" / "metrics.json",
        METRICS_DIR / "train" / "plots" / "metrics",
    ),
    "select": (RETRIEVER_DIR, METRICS_DIR / "select.json"),
    "eval": tuple(
        METRICS_DIR / name
        for name in (
            "examples.md",
            "eval.json",
            "eval_delta.json",
            "eval_train.json",
            "benchmarks.json",
            "eval_seen.json",
            "plots/hit_rate_vs_k.csv",
            "eval_queries.csv",
        )
    ),  # fmt: skip
    "export": (EXPORT_DIR,),
}
# The stage that writes each output: the fix for a missing or damaged one.
PRODUCERS = {out: stage for stage, outs in OUTPUTS.items() for out in outs}


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


def output_of(path: Path | str) -> Path | None:
    """The pipeline output (a key of `PRODUCERS`) that `path` is or lies in, wherever the
    checkout is; None for any other path."""
    parts = Path(path).parts
    for out in PRODUCERS:
        n = len(out.parts)
        if any(parts[i : i + n] == out.parts for i in range(len(parts) - n + 1)):
            return out
    return None


def not_found(path: Path | str, stage: str | None = None) -> EmbedtuneError:
    """The error for a missing `path`, naming the stage that makes it (`stage`, else the one
    `PRODUCERS` names)."""
    out = output_of(path)
    stage = stage or (PRODUCERS[out] if out else None)
    fix = f": run `dvc repro {stage}` first" if stage else ""
    return EmbedtuneError(f"{path} not found{fix}")


def damaged(path: Path | str, err: BaseException, stage: str | None = None) -> EmbedtuneError:
    """The error for an unreadable `path`: why, and how to restore or rebuild it."""
    out = output_of(path)
    stage = stage or (PRODUCERS[out] if out else None)
    why = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if out is not None:
        fix = f"restore it with `dvc checkout {out}` or rebuild it with `dvc repro {stage}`"
    elif stage is not None:
        fix = f"rebuild it with `dvc repro {stage}`"
    else:
        fix = "restore or rebuild it"
    return EmbedtuneError(f"{path} is damaged ({why}): {fix}")


@contextmanager
def reading(
    path: Path | str, *damage: type[BaseException], stage: str | None = None
) -> Iterator[None]:
    """Read `path` in this block: a missing file, or a `ValueError` (bad JSON, bad UTF-8) or one
    of `damage` raised here, becomes one `EmbedtuneError` naming the file and the fix."""
    try:
        yield
    except FileNotFoundError as err:
        raise not_found(err.filename or path, stage) from None
    except (ValueError, *damage) as err:
        raise damaged(path, err, stage) from None


def read_json(path: Path | str, stage: str | None = None) -> Any:
    with reading(path, stage=stage):
        return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    with reading(path), Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_safetensors(path: Path | str, stage: str | None = None) -> tuple[dict, dict[str, str]]:
    """Every tensor of a safetensors file, and its metadata ({} if none)."""
    from safetensors import SafetensorError, safe_open

    with reading(path, SafetensorError, stage=stage):
        with safe_open(str(path), framework="pt") as f:
            return {name: f.get_tensor(name) for name in f.keys()}, f.metadata() or {}


def check_safetensors(path: Path | str, stage: str | None = None) -> None:
    """Refuse a missing or truncated safetensors file (its header covers the whole file) before
    a library loads it, without reading the tensors."""
    from safetensors import SafetensorError, safe_open

    with reading(path, SafetensorError, stage=stage), safe_open(str(path), framework="pt"):
        pass


def unwritable(folder: Path | str) -> str | None:
    """Why `folder` cannot be written, or None if it can: it is made if missing and written in
    for real (root, or a read-only mount, make the permission bits misleading)."""
    import shutil

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tempfile.mkdtemp(prefix=".write-test.", dir=folder))
    except OSError as err:
        return err.strerror or type(err).__name__
    return None


def check_output_writable(out: Path) -> None:
    """Refuse an output that could not be written: the folder it is written in (`out`'s
    parent, where the atomic writes make their temporaries) and `out` itself when it is a
    folder already, each tried for real; a folder not yet made is tried at its nearest existing
    parent, so nothing is made here."""
    for folder in (out.parent, out) if out.is_dir() else (out.parent,):
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        check_writable(folder)


def remove_temporaries(out: Path) -> list[Path]:
    """Remove what a killed atomic write of `out` left beside it (`.<name>.*`, see
    `atomic_path` and `atomic_folder`); the paths removed."""
    import shutil

    stale = sorted(out.parent.glob(f".{out.name}.*")) if out.parent.is_dir() else []
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return stale


def check_writable(folder: Path | str) -> None:
    """Refuse a `folder` that cannot be written (see `unwritable`), so a stage refuses it
    before its work rather than after."""
    why = unwritable(folder)
    if why is not None:
        raise EmbedtuneError(
            f"{folder}/ is not writable ({why}): make it writable "
            f"(e.g. `chmod u+w {folder}`) and run again"
        )


def write_csv(path: Path | str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    import csv

    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def load_qa(split: str) -> dict:
    """The `EmbeddingQAFinetuneDataset` dict that `synth` wrote for `split`."""
    return read_json(QA_DIR / f"{split}.json")
