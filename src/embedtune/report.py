"""Print base vs tuned figures from metrics/eval.json as a table.

Usage: python -m embedtune.report [metrics/eval.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from embedtune import io
from embedtune.errors import EmbedtuneError, run_stage


def print_table(metrics: dict[str, dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    names = [k for k in metrics["base"] if k != "queries"]
    table = Table(title=f"validation split, {metrics['base']['queries']} held-out queries")
    table.add_column("model")
    for name in names:
        table.add_column(name, justify="right")
    for model in ("base", "tuned"):
        table.add_row(model, *(f"{metrics[model][n]:.4f}" for n in names))
    table.add_row(
        "tuned - base", *(f"{metrics['tuned'][n] - metrics['base'][n]:+.4f}" for n in names)
    )
    Console().print(table)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else io.METRICS_DIR / "eval.json"
    if not path.is_file():
        raise EmbedtuneError(f"{path} not found: run `make demo` or `dvc exp run` first")
    print_table(json.loads(path.read_text()))


if __name__ == "__main__":
    run_stage("report", main)
