"""The one error type a stage reports as a single line instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


class EmbedtuneError(Exception):
    """A problem the user can fix: the message names the file, URL or parameter and the fix."""


def run_stage(name: str, body: Callable[[], None]) -> None:
    """Run a stage entry point, turning an `EmbedtuneError` into one line on stderr and exit 2."""
    try:
        body()
    except EmbedtuneError as err:
        print(f"embedtune {name}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
