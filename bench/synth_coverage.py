"""Question coverage on real abstracts: the `synth` stage with the cpu preset, per synth variant.

Usage: python bench/synth_coverage.py --collection DIR [--docs 40] [--skip 300] [--keep DIR]
           [--chunks DIR] [--set llm=qwen_coder ...] [VARIANT.yaml ...]

Takes documents (never queries or qrels) of the Vaswani NPL collection: after sorting the
abstracts by sha256 of their id and skipping the first `--skip` (the ones `bench_quality.py`
uses), the next `--docs` are the train split and the `--docs` after them the validation split,
chunked by our chunk code; `--chunks DIR` takes another corpus's DIR/train.jsonl and
DIR/validation.jsonl instead (as the chunk stage writes them). Runs the real stage
(`python -m embedtune.synth`, `experiment=cpu`, SmolLM2-135M) once with conf/ as committed and once
per VARIANT.yaml, a mapping of synth keys that replace the committed ones (`prompt: ...`,
`keyword_queries: 2`). One line per variant and split: coverage (chunks with at least one kept
query), kept questions and keyword queries, and every drop reason. Answers go to the usual
answer cache, so a rerun only costs new prompts; `--keep DIR` works there and keeps each
variant's data/qa as DIR/variants/<variant>/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from embedtune import io
from embedtune.chunk.splitting import split_documents
from embedtune.compose import compose
from embedtune.config import ChunkConfig, load_params
from embedtune.reading.readers import read_documents

ROOT = Path(__file__).resolve().parents[1]


def write_chunks(collection: Path, work: Path, skip: int, count: int) -> None:
    """data/chunks/<split>.jsonl of `count` abstracts each, after the first `skip` by sha256."""
    records = [json.loads(line) for line in (collection / "corpus.jsonl").open()]
    records.sort(key=lambda r: hashlib.sha256(str(r["_id"]).encode()).hexdigest())
    chunking = load_params({"chunk": ChunkConfig}, work / "params.yaml").chunk
    for n, split in enumerate(io.SPLITS):
        folder = work / "docs" / split
        folder.mkdir(parents=True)
        for record in records[skip + n * count : skip + (n + 1) * count]:
            text = f"{record.get('title', '')} {record['text']}".strip()
            (folder / f"{record['_id']}.txt").write_text(text + "\n")
        chunks = split_documents(read_documents(folder, [".txt"]), chunking)
        io.write_jsonl(work / io.CHUNKS_DIR / f"{split}.jsonl", chunks)


def run_variant(work: Path, name: str, base: dict, updates: dict) -> tuple[dict, float]:
    params = {**base, "synth": {**base["synth"], **updates}}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "embedtune.synth"], cwd=work, check=True)
    seconds = time.perf_counter() - started
    shutil.copytree(work / io.QA_DIR, work / "variants" / name)
    return json.loads((work / io.METRICS_DIR / "synth.json").read_text()), seconds


def line(name: str, split: str, figures: dict) -> str:
    covered = figures["chunks"] - figures["failed_chunks"]
    keywords = figures.get("keyword_queries", 0)
    questions = figures["questions"] - keywords
    return (
        f"{name} {split}: coverage {covered / figures['chunks']:.3f} "
        f"({covered}/{figures['chunks']} chunks), {questions} questions, "
        f"{keywords} keyword queries, judged {figures.get('judged', 0)}, "
        f"drops {json.dumps(figures['drops'], sort_keys=True)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", type=Path, help="YAML mappings of synth keys")
    parser.add_argument("--docs", type=int, default=40, help="abstracts per split")
    parser.add_argument("--skip", type=int, default=300, help="abstracts skipped first")
    parser.add_argument(
        "--collection",
        type=Path,
        help="a BEIR folder, e.g. Vaswani NPL (bench/beir_collection.py writes one)",
    )
    parser.add_argument("--chunks", type=Path, help="use DIR/<split>.jsonl chunks instead")
    parser.add_argument("--keep", type=Path, help="work here (and keep it) instead of a tmp dir")
    parser.add_argument("--set", nargs="*", default=[], help="more overrides, e.g. llm=qwen_coder")
    args = parser.parse_args()
    if not args.chunks and (
        args.collection is None or not (args.collection / "corpus.jsonl").is_file()
    ):
        sys.exit(
            f"--collection {args.collection}: no corpus.jsonl there "
            "(python bench/beir_collection.py vaswani DIR writes Vaswani NPL there)"
        )
    variants = {"committed": {}}
    variants.update({p.stem: yaml.safe_load(p.read_text()) for p in args.variants})
    work = args.keep or Path(tempfile.mkdtemp(prefix="embedtune-coverage-"))
    if work.exists() and any(work.iterdir()):
        sys.exit(f"{work} is not empty: remove it or pick another --keep folder")
    work.mkdir(parents=True, exist_ok=True)
    try:
        overrides = ["experiment=cpu", "synth.max_failure_rate=1.0", *args.set]
        compose(overrides, conf_dir=ROOT / "conf", output=work / "params.yaml")
        base = yaml.safe_load((work / "params.yaml").read_text())
        os.chdir(work)
        if args.chunks:
            shutil.copytree(args.chunks.resolve(), work / io.CHUNKS_DIR)
        else:
            write_chunks(args.collection, work, args.skip, args.docs)
        for name, updates in variants.items():
            metrics, seconds = run_variant(work, name, base, updates)
            for split, figures in metrics.items():
                print(line(name, split, figures), flush=True)
            print(f"{name}: {seconds:.0f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
