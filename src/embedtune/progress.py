"""Progress of a long loop, for whoever watches it: a rich bar on a terminal; elsewhere (`dvc exp
run > log`, nohup, CI, `dvc queue logs`) a plain line about every 30 s and one at the end:

    synth train: 120/547 chunks, 0.8 chunks/s, 41 tokens/s, 2m30s, ETA 8m40s

Usage:
    with progress.task("synth train", total=547, unit="chunks") as bar:
        bar.advance(8, tokens=330)
    progress.advance(64, "questions")  # deep inside a loop: the innermost task of that unit
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

INTERVAL_S = 30.0  # seconds between plain lines
_TASKS: ContextVar[tuple[Task, ...]] = ContextVar("embedtune_progress", default=())


def duration(seconds: float) -> str:
    """2m30s, 45s, 1h02m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Task:
    """One loop's progress: `done` of `total` (None: unknown) in `unit`, and running sums of
    other quantities (tokens) whose rates the line also gives."""

    def __init__(
        self,
        label: str,
        total: int | None,
        unit: str,
        terminal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = INTERVAL_S,
    ):
        self.label, self.total, self.unit = label, total, unit
        self.done, self.counts = 0, {}
        self.clock, self.interval_s = clock, interval_s
        self.started = self.shown = clock()
        self.terminal = sys.stdout.isatty() if terminal is None else terminal
        self._bar = self._start_bar() if self.terminal else None

    def advance(self, n: int = 1, **counts: int) -> None:
        self.done += n
        for name, value in counts.items():
            self.counts[name] = self.counts.get(name, 0) + value
        if self._bar is not None:
            self._bar[0].update(self._bar[1], completed=self.done, rates=self._rates())
        elif self.clock() - self.shown >= self.interval_s:
            self._show()

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        done = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        parts = [f"{self.label}: {done} {self.unit}", self._rates(), duration(elapsed)]
        if self.total is not None and 0 < self.done < self.total:
            parts.append(f"ETA {duration(elapsed * (self.total - self.done) / self.done)}")
        return ", ".join(p for p in parts if p)

    def close(self) -> None:
        if self._bar is not None:
            self._bar[0].stop()
        else:
            self._show()

    def _rates(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rates = [f"{self.done / elapsed:.1f} {self.unit}/s"]
        rates += [f"{value / elapsed:.0f} {name}/s" for name, value in self.counts.items()]
        return ", ".join(rates)

    def _show(self) -> None:
        print(self.line(), flush=True)
        self.shown = self.clock()

    def _start_bar(self):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bar = Progress(
            TextColumn(self.label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(self.unit),
            TextColumn("{task.fields[rates]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        bar.start()
        return bar, bar.add_task(self.label, total=self.total, rates="")


@contextmanager
def task(label: str, total: int | None, unit: str, **kwargs) -> Iterator[Task]:
    """A `Task` that `advance(n, unit)` calls anywhere inside the block report to; its last
    line is printed when the block ends."""
    current = Task(label, total, unit, **kwargs)
    token = _TASKS.set((*_TASKS.get(), current))
    try:
        yield current
    finally:
        _TASKS.reset(token)
        current.close()


def advance(n: int, unit: str) -> None:
    """Report `n` more `unit` to the innermost task counting `unit` (none: nothing)."""
    for current in reversed(_TASKS.get()):
        if current.unit == unit:
            current.advance(n)
            return
