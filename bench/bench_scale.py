"""The stages after `embed` at scale: time and peak memory per stage on generated data.

Usage: python bench/bench_scale.py [--chunks 10000 100000] [--methods adapter_linear nudge]
       [--stages mine train select eval] [--keep DIR [--reuse]]

For each corpus size: N chunks with 2 questions each (90% of the chunks in the training split,
10% in the validation split), written as `synth` and `embed` would write them (data/qa/*.json,
data/embeddings/*.safetensors), so no LLM or encoder runs. The answer is planted: a question's
base embedding is its chunk's, mapped by one fixed matrix near the identity (what a linear adapter
can learn back) plus noise, and its text is words of its chunk plus a few others (BM25 finds it
too). Then the real stage entry points run on it in a temporary working directory, one child
process each (`python -m embedtune.<stage>`, params.yaml composed from conf/ with the `cpu`
preset): `mine` (round-trip filter at top 10: every training question ranked over the training
corpus; no hard negatives, which would need the encoder), then per method `train`, `select`
(every default candidate on the held-out slice) and `eval` (every candidate on the validation
split, the seen-corpus questions and `eval.train_questions` training questions, 5,000 by default,
each over its whole corpus). Prints each stage's seconds and
peak resident memory (the child's ru_maxrss), one line per size
`size: chunks=N questions=Q peak_gb=P seconds=S`, and last
`scale: chunks=N questions=Q peak_gb=P seconds=S` for the largest size.

The parent imports neither torch nor embedtune, so a child's peak is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUESTIONS_PER_CHUNK = 2
VALIDATION_SHARE = 0.1  # of the chunks (and their questions)
DIM = 384  # all-MiniLM-L6-v2's width, as the cpu preset embeds
NOISE = 5.0  # question = chunk mapped + NOISE * a unit vector: cosine about 0.2 with its chunk
VOCABULARY, CHUNK_WORDS, QUESTION_WORDS, OWN_WORDS = 20_000, 40, 8, 3
STAGES = ["mine", "train", "retrieve", "eval"]
OVERRIDES = ["experiment=cpu", "mine.negatives=0", "mine.roundtrip_top_k=10", "seed=42"]


# --- the child that writes the data (it imports torch; the parent does not) -------------------


def words_of(rng, count: int) -> list[str]:
    return [f"w{i}x" for i in rng.integers(0, VOCABULARY, count)]


def write_split(split: str, chunk_ids: list[str], rng, mapping, folder: Path) -> None:
    import torch
    import torch.nn.functional as F

    from embedtune.embeddings import SplitEmbeddings, save_embeddings

    corpus, queries, relevant = {}, {}, {}
    query_ids, rows = [], []
    for row, cid in enumerate(chunk_ids):
        text = words_of(rng, CHUNK_WORDS)
        corpus[cid] = " ".join(text)
        for k in range(QUESTIONS_PER_CHUNK):
            qid = f"{cid}-q{k}"
            own = [text[i] for i in rng.choice(CHUNK_WORDS, OWN_WORDS, replace=False)]
            queries[qid] = " ".join(own + words_of(rng, QUESTION_WORDS - OWN_WORDS)) + "?"
            relevant[qid] = [cid]
            query_ids.append(qid)
            rows.append(row)
    seed = int(rng.integers(2**31))
    g = torch.Generator().manual_seed(seed)
    chunks = F.normalize(torch.randn(len(chunk_ids), DIM, generator=g), dim=-1)
    noise = F.normalize(torch.randn(len(query_ids), DIM, generator=g), dim=-1)
    asked = F.normalize(chunks[torch.tensor(rows)] @ mapping.T + NOISE * noise, dim=-1)
    dataset = {"queries": queries, "corpus": corpus, "relevant_docs": relevant, "mode": "text"}
    qa = folder / "data" / "qa" / f"{split}.json"
    qa.parent.mkdir(parents=True, exist_ok=True)
    qa.write_text(json.dumps(dataset), encoding="utf-8")
    emb = SplitEmbeddings(query_ids, asked, list(chunk_ids), chunks)
    save_embeddings(folder / "data" / "embeddings" / f"{split}.safetensors", emb)


def generate(folder: Path, chunks: int, methods: list[str]) -> None:
    """Data of `chunks` chunks and a params file per method (params.METHOD.yaml) in `folder`."""
    import numpy as np
    import torch

    from embedtune.compose import compose

    rng = np.random.default_rng(chunks)
    g = torch.Generator().manual_seed(chunks)
    mapping = torch.eye(DIM) + 0.5 * torch.randn(DIM, DIM, generator=g) / DIM**0.5
    held = round(chunks * VALIDATION_SHARE)
    ids = [f"c{i:07d}" for i in range(chunks)]
    write_split("train", ids[held:], rng, mapping, folder)
    write_split("validation", ids[:held], rng, mapping, folder)
    for method in methods:
        compose([*OVERRIDES, f"train={method}"], REPO / "conf", folder / f"params.{method}.yaml")


# --- the parent: one child per stage -----------------------------------------------------------


def run_child(args: list[str], cwd: Path, log: Path) -> tuple[float, float]:
    """Run a child to the end: (seconds, peak resident GB); its output goes to `log`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    with log.open("a") as out:
        child = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            _, status, usage = os.wait4(child.pid, 0)
        except BaseException:  # interrupted (Ctrl-C, or `timeout` through main's handler)
            child.kill()
            child.wait()
            raise
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        sys.exit(f"{' '.join(args)} failed ({child.returncode}):\n" + "\n".join(tail))
    return seconds, usage.ru_maxrss / 1e6  # KiB on Linux


def stage(name: str, folder: Path, log: Path) -> tuple[float, float]:
    return run_child([sys.executable, "-m", f"embedtune.{name}"], folder, log)


def run_size(
    chunks: int, folder: Path, methods: list[str], stages: list[str], reuse: bool = False
) -> tuple[int, float, float]:
    """The `stages` on `chunks` chunks: (questions, peak GB, seconds of the stages). With
    `reuse`, `folder` already holds the data (and what earlier stages wrote)."""
    log = folder / "bench_scale.log"
    questions = chunks * QUESTIONS_PER_CHUNK
    if not reuse:
        gen = [sys.executable, __file__, "generate", str(folder), "--chunks", str(chunks)]
        seconds, peak = run_child([*gen, "--methods", *methods], folder, log)
        print(f"chunks={chunks} questions={questions}: data written in {seconds:.1f} s", flush=True)
    figures = []

    def run(name: str, method: str) -> None:
        if name not in stages:
            return
        shutil.copy(folder / f"params.{method}.yaml", folder / "params.yaml")
        figures.append((name, method, *stage(name, folder, log)))
        print(f"  {name:<9} {method:<15} {figures[-1][2]:8.1f} s  {figures[-1][3]:6.2f} GB")
        sys.stdout.flush()

    run("mine", methods[0])  # mine reads no train.* key: one run serves every method
    for method in methods:
        for name in ("train", "retrieve", "eval"):
            run(name, method)
    total = sum(f[2] for f in figures)
    peak = max(f[3] for f in figures)
    print(f"size: chunks={chunks} questions={questions} peak_gb={peak:.2f} seconds={total:.0f}")
    return questions, peak, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--methods", nargs="+", default=["adapter_linear", "nudge"])
    parser.add_argument("--stages", nargs="+", default=STAGES, choices=STAGES)
    parser.add_argument("--keep", type=Path, help="write each size's folder under DIR and keep it")
    parser.add_argument(
        "--reuse", action="store_true", help="with --keep: run on the data already there"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the running stage is ended too
    if args.reuse and not args.keep:
        parser.error("--reuse needs --keep")
    last = None
    for chunks in args.chunks:
        if args.keep:
            folder = args.keep / f"chunks-{chunks}"
            if not args.reuse:
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
            last = (chunks, *run_size(chunks, folder, args.methods, args.stages, args.reuse))
        else:
            with tempfile.TemporaryDirectory(prefix="embedtune-bench-scale-") as tmp:
                last = (chunks, *run_size(chunks, Path(tmp), args.methods, args.stages))
    chunks, questions, peak, total = last
    print(f"scale: chunks={chunks} questions={questions} peak_gb={peak:.2f} seconds={total:.0f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "generate":
        sub = argparse.ArgumentParser()
        sub.add_argument("command")
        sub.add_argument("folder", type=Path)
        sub.add_argument("--chunks", type=int, required=True)
        sub.add_argument("--methods", nargs="+", required=True)
        options = sub.parse_args()
        generate(options.folder, options.chunks, options.methods)
    else:
        main()
