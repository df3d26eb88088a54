"""Print base vs tuned figures from metrics/eval.json as a compact table.

Usage: python -m embedtune.eval.report [metrics/eval.json]

When metrics/eval_delta.json lies beside it, the tuned - base row also shows the paired
bootstrap interval of each difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from embedtune import io
from embedtune.errors import EmbedtuneError
from embedtune.retrieval.bootstrap import format_bounds, format_interval
from embedtune.stage import run_stage

COLUMNS = ("hit_rate@1", "hit_rate@5", "hit_rate@10", "mrr@10", "ndcg@10")
SUMMARISED = ("hit_rate@", "recall@")  # families the rows above stand for


def print_table(
    metrics: dict[str, dict], delta: dict[str, dict] | None = None, title: str | None = None
) -> None:
    """One row per metric: base, tuned, tuned - base and, when `delta` has it, its interval.

    Metrics missing from `metrics` (say an older eval.json) are left out; metrics of other
    families (one added to `eval.metrics`, say) are shown after the usual ones.
    """
    from rich.console import Console
    from rich.table import Table

    shown = [n for n in metrics["base"] if n != "queries"]
    names = [n for n in COLUMNS if n in shown]
    if names:  # the usual rows, then metrics of any other family (one added to eval.metrics)
        names += [n for n in shown if n not in names and not n.startswith(SUMMARISED)]
    else:  # an eval.json from before these metrics: show what it has
        names = shown
    delta = delta or {}
    interval = any(delta.get(n, {}).get("low") is not None for n in names)
    queries = metrics["base"].get("queries", "?")
    table = Table(
        title=(title or "validation split, {queries} held-out queries").format(queries=queries)
    )
    for column in ("metric", "base", "tuned", "tuned - base"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    if interval:
        table.add_column("interval", justify="right")
    for name in names:
        base, tuned = metrics["base"][name], metrics["tuned"][name]
        diff = delta.get(name, {}).get("diff", tuned - base)
        row = [name, f"{base:.4f}", f"{tuned:.4f}", f"{diff:+.4f}"]
        if interval:
            row.append(format_bounds(delta.get(name, {})) or "-")
        table.add_row(*row)
    if interval:
        table.caption = "interval: paired bootstrap over the queries"
    Console().print(table)


def print_retrievers(figures: dict, where: str) -> None:
    """One row per candidate retriever, then the shipped one: MRR@10 and nDCG at its largest
    cut-off, and that nDCG's difference from the dense base with its interval. Nothing when
    `figures` has no "retrievers" (an eval.json from before them)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    retrievers = figures.get("retrievers")
    if not retrievers:
        return
    base = retrievers["base"]
    key = _largest_k(base, "ndcg") or next(n for n in base if n != "queries")
    names = [n for n in ("mrr@10", key) if n in base]
    table = Table(
        title=f"{where}: every retriever ({base.get('queries', '?')} queries)", box=box.SIMPLE
    )
    table.add_column("retriever", no_wrap=True)
    for column in names:
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column(f"{key} - base [interval]", justify="right", no_wrap=True)
    deltas = figures.get("delta_retrievers", {})
    rows = [(name, name, deltas.get(name, {}).get(key)) for name in retrievers]
    if "shipped" in figures:
        shipped = figures["shipped"]["retriever"]
        rows.append((f"shipped: {shipped}", shipped, figures.get("delta_shipped", {}).get(key)))
    for label, name, delta in rows:
        cells = [label, *(f"{retrievers[name][n]:.4f}" for n in names)]
        cells.append("" if delta is None else format_interval(delta))
        table.add_row(*cells)
    table.caption = "interval: paired bootstrap over the queries, against the dense base"
    Console().print(table)
    lexical = deltas.get("bm25", {}).get(key)
    if lexical and lexical["low"] is not None and lexical["low"] > 0:
        gain = f"{key} {format_interval(lexical)}"
        print(f"{where}: BM25 alone beats the dense base model beyond noise ({gain})")


def _largest_k(summary: dict, metric: str) -> str | None:
    names = [n for n in summary if n.startswith(f"{metric}@")]
    return max(names, key=lambda n: int(n.split("@")[1]), default=None)


def print_train_split(metrics: dict[str, dict]) -> None:
    """One line: the training split's hit rate at its largest cut-off, base and tuned."""
    name = _largest_k(metrics["base"], "hit_rate")
    if name:
        print(
            f"train split ({metrics['base']['queries']} queries): {name} "
            f"base {metrics['base'][name]:.4f}, tuned {metrics['tuned'][name]:.4f}"
        )


def print_benchmarks(benchmarks: dict[str, dict]) -> None:
    """One line per benchmark: nDCG at its largest cut-off, base, tuned, and tuned - base with
    its interval when the figures carry one."""
    for bench, metrics in benchmarks.items():
        name = _largest_k(metrics["base"], "ndcg")
        if not name:
            continue
        base, tuned = metrics["base"][name], metrics["tuned"][name]
        line = f"benchmark {bench} ({metrics['base']['queries']} queries): {name} "
        line += f"base {base:.4f} tuned {tuned:.4f}"
        delta = metrics.get("delta", {}).get(name)
        if delta:
            line += f" diff {format_interval(delta)}"
        print(line)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else io.METRICS_DIR / "eval.json"
    if not path.is_file():
        raise EmbedtuneError(f"{path} not found: run `make demo` or `dvc exp run` first")
    delta_path = path.with_name("eval_delta.json")
    delta = json.loads(delta_path.read_text()) if delta_path.is_file() else None
    figures = json.loads(path.read_text())
    print_table(figures, delta)
    print_retrievers(figures, "validation split")


if __name__ == "__main__":
    run_stage("report", main)
