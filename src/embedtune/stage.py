"""The stage runner: a stage entry point whose fixable errors end as one line, not a traceback.

Usage (the last lines of every stage's __main__.py):

    if __name__ == "__main__":
        run_stage("chunk", main)
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

from embedtune import io
from embedtune.errors import EmbedtuneError
from embedtune.io import PARAMS_FILE


def run_stage(name: str, body: Callable[[], None], reads_params: bool = True) -> None:
    """Run a stage entry point; an `EmbedtuneError`, or a missing input under data/ or models/,
    is one line on stderr and exit 2.

    With `reads_params`, params.yaml must be the same when the stage ends as when it started:
    dvc.lock would otherwise record values the stage never read (another `dvc exp run` in the
    same workspace rewrites it).
    """
    try:
        prepare_outputs(name)
        params = PARAMS_FILE if reads_params else None
        before = _digest(params)
        body()
        if before is not None and _digest(params) != before:
            raise EmbedtuneError(
                f"{params} changed while {name} ran (another run in this workspace?): "
                "use `dvc exp run --queue` for parallel runs"
            )
    except EmbedtuneError as err:
        _fail(name, err)
    except FileNotFoundError as err:
        missing = _missing_input(err)
        if missing is None:
            raise
        _fail(name, missing)


def prepare_outputs(name: str) -> None:
    """Before stage `name` works: every output it writes (`io.OUTPUTS`) must be writable, and
    the temporaries a killed run of it left beside them are removed (only its own, by name)."""
    outputs = io.OUTPUTS.get(name, ())
    for out in outputs:
        io.check_output_writable(out)
    for out in outputs:
        for stale in io.remove_temporaries(out):
            print(f"embedtune {name}: removed {stale}, left by an interrupted run")


def _fail(name: str, err: EmbedtuneError) -> None:
    print(f"embedtune {name}: error: {err}", file=sys.stderr)
    raise SystemExit(2) from None


def _digest(path: Path | None) -> str | None:
    """sha256 of the file's bytes; None when there is no file."""
    try:
        return None if path is None else hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _missing_input(err: FileNotFoundError) -> EmbedtuneError | None:
    """The one-line error for a missing path under data/ or models/ (naming the stage that
    makes it), else None."""
    if not err.filename:
        return None
    path = Path(err.filename)
    if path.is_absolute():
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            return None
    if path.parts[:1] not in (("data",), ("models",)):
        return None
    return io.not_found(path)
