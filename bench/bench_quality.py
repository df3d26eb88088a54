"""Quality on real queries: the pipeline on Vaswani NPL abstracts, scored on its human queries.

Usage: python bench/bench_quality.py --collection DIR [--docs 300|all] [--keep DIR]
           [--methods adapter_linear_cpu full] [--set synth.attempts=3 ...]
           (make bench-quality COLLECTION=DIR)

DIR is a collection in BEIR layout; `python bench/beir_collection.py vaswani DIR` writes Vaswani
NPL, the one our figures come from.

A method is a `train=` option, or `LABEL:OVERRIDE;OVERRIDE...` for a variant, e.g.
`full_neg:train=full;train.hard_negatives=4`.

Runs the committed pipeline the way a user would, in a fresh clone: a fixed subset of the
collection's abstracts (the `--docs` whose sha256 of the id is smallest, one text file each) as
`data=local` documents with `experiment=cpu` (`--docs all`: every abstract, the user's case of
questions written for every document people ask about), synthetic questions, tuning, and
`eval.benchmarks` on the collection's real queries over all its abstracts. The queries and
qrels are read by `eval` only: nothing is trained or chosen with them. Per method:

    <method>: ndcg@10 base B tuned T diff D [low, high]   (paired bootstrap, 95%)

then the same figure on the validation abstracts' questions and on the seen-corpus questions
(new synthetic questions about the training abstracts, `metrics/eval_seen.json`), the held-out
verdict of stage `select`, one line per candidate retriever on the real queries (`tuned` there
is the candidate; `base` is always the dense base model), how far the held-out slice agrees
with the real queries over the candidates, and last the retriever it ships:

    agreement: spearman S regret R shipped RETRIEVER
    shipped RETRIEVER: ndcg@10 base B tuned T diff D [low, high]

S is the Spearman correlation, over the candidates, of held-out MRR@10 (synthetic questions)
with real nDCG@10; R is the real nDCG@10 of the best candidate minus the shipped one's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from embedtune.retrieval.bootstrap import format_interval

ROOT = Path(__file__).resolve().parents[1]
METRIC = "ndcg@10"
HOW_TO_GET = "python bench/beir_collection.py vaswani DIR writes Vaswani NPL there"
# SmolLM2 writes no valid question for many of these abstracts (docs/benchmarks.md); the
# benchmark measures tuning, so it accepts what synth produces.
PIPELINE = ["-S", "experiment=cpu", "-S", "data=local", "-S", "synth.max_failure_rate=0.9"]


def write_documents(collection: Path, folder: Path, count: int | None) -> None:
    """The `count` abstracts (None: all) whose sha256 of the id is smallest, as <id>.txt
    files."""
    records = [json.loads(line) for line in (collection / "corpus.jsonl").open()]
    records.sort(key=lambda r: hashlib.sha256(str(r["_id"]).encode()).hexdigest())
    folder.mkdir(parents=True)
    for record in records[:count]:  # None: all
        text = f"{record.get('title', '')} {record['text']}".strip()
        (folder / f"{record['_id']}.txt").write_text(text + "\n")


def run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(cwd / "src")}
    # dvc and the stages run from this interpreter's environment (.venv), activated or not
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def method_overrides(spec: str) -> tuple[str, list[str]]:
    """(label, -S overrides) of a `--methods` entry."""
    if ":" not in spec:
        return spec, ["-S", f"train={spec}"]
    label, rest = spec.split(":", 1)
    return label, [arg for override in rest.split(";") for arg in ("-S", override)]


def figure(figures: dict, name: str = "tuned") -> str:
    """ndcg@10 of the dense base and of retriever `name`, with the interval of the difference."""
    if name == "tuned":
        tuned, delta = figures["tuned"][METRIC], figures["delta"][METRIC]
    elif name == "shipped":
        tuned, delta = figures["shipped"][METRIC], figures["delta_shipped"][METRIC]
    else:
        tuned, delta = (
            figures["retrievers"][name][METRIC],
            figures["delta_retrievers"][name][METRIC],
        )
    base = figures["base"][METRIC]
    return f"{METRIC} base {base:.4f} tuned {tuned:.4f} diff {format_interval(delta)}"


def retriever_lines(figures: dict, verdict: dict) -> list[str]:
    """The held-out verdict, one line per candidate on the real queries, the shipped one last."""
    gain = verdict.get("gain_mrr@10")
    held = f"  held-out pick ({verdict['heldout_questions']} training questions)"
    held += f": best {verdict['best']}"
    if gain:
        held += f", mrr@10 {format_interval(gain)} over base"
    lines = [held]
    lines += [
        f"  {name}: {figure(figures, name)}" for name in figures["retrievers"] if name != "base"
    ]
    lines.append(agreement_line(agreement(verdict, figures)))
    lines.append(f"shipped {figures['shipped']['retriever']}: {figure(figures, 'shipped')}")
    return lines


def agreement(verdict: dict, figures: dict) -> dict:
    """Over the candidates both scored: the Spearman correlation of held-out MRR@10 with real
    nDCG@10 (None with fewer than two), and the shipped candidate's regret (the best real
    nDCG@10 minus its own)."""
    import pandas as pd

    held = verdict.get("mrr@10", {})
    real = {name: values[METRIC] for name, values in figures["retrievers"].items()}
    names = [name for name in real if name in held]
    spearman = None
    if len(names) > 1:  # Spearman: Pearson of the average ranks
        x = pd.Series([held[n] for n in names]).rank()
        spearman = float(x.corr(pd.Series([real[n] for n in names]).rank()))
    shipped = figures["shipped"]["retriever"]
    return {"spearman": spearman, "regret": max(real.values()) - real[shipped], "shipped": shipped}


def agreement_line(found: dict) -> str:
    spearman = "n/a" if found["spearman"] is None else f"{found['spearman']:+.2f}"
    return f"agreement: spearman {spearman} regret {found['regret']:.4f} shipped {found['shipped']}"


def line(method: str, figures: dict, seconds: float) -> str:
    return f"{method}: {figure(figures)}  ({seconds:.0f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--docs",
        type=lambda v: None if v == "all" else int(v),
        default=300,
        help="abstracts used as documents (all: every one)",
    )
    parser.add_argument(
        "--methods", nargs="+", default=["adapter_linear_cpu", "adapter_2layer", "full"]
    )
    parser.add_argument(
        "--collection",
        type=Path,
        help="a BEIR folder, e.g. Vaswani NPL (bench/beir_collection.py writes one)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="one more -S override"
    )
    parser.add_argument("--keep", type=Path, help="work here (and keep it) instead of a tmp dir")
    args = parser.parse_args()
    if args.collection is None or not (args.collection / "corpus.jsonl").is_file():
        sys.exit(f"--collection {args.collection}: no BEIR collection there ({HOW_TO_GET})")

    work = args.keep or Path(tempfile.mkdtemp(prefix="embedtune-quality-"))
    repo, docs = work / "repo", work / "docs"
    if repo.exists() or docs.exists():
        sys.exit(f"{work} already holds a run: remove it or pick another --keep folder")
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    write_documents(args.collection, docs, args.docs)
    where = ["-S", f"data.local_dir={docs}", "-S", f"eval.benchmarks=[{args.collection}]"]
    where += [arg for override in args.set for arg in ("-S", override)]
    results = {}
    for spec in args.methods:
        method, overrides = method_overrides(spec)
        started = time.perf_counter()
        run(["dvc", "exp", "run", *PIPELINE, *where, *overrides], repo)
        figures = json.loads((repo / "metrics/benchmarks.json").read_text())
        results[method] = figures[args.collection.name]
        print(line(method, results[method], time.perf_counter() - started), flush=True)
        if len(results) == 1:  # the same questions serve every method
            synth = json.loads((repo / "metrics/synth.json").read_text())
            counts = {s: (v["chunks"], v["questions"]) for s, v in synth.items()}
            print("  synth (chunks, questions):", json.dumps(counts), flush=True)
        validation = json.loads((repo / "metrics/eval.json").read_text())
        validation["delta"] = json.loads((repo / "metrics/eval_delta.json").read_text())
        print(f"  validation questions: {figure(validation)}", flush=True)
        seen = json.loads((repo / "metrics/eval_seen.json").read_text())
        if seen:
            print(f"  seen-corpus questions: {figure(seen)}", flush=True)
        verdict = json.loads((repo / "metrics/select.json").read_text())
        print("\n".join(retriever_lines(results[method], verdict)), flush=True)
        results[method] = {"benchmark": results[method], "validation": validation, "seen": seen}
    (work / "bench_quality.json").write_text(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
