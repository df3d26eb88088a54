"""Progress where no terminal is: a plain line about every 30 s and at the end, done/total,
rates, elapsed and ETA; reported from deep inside a loop to the stage's task of that unit."""

from __future__ import annotations

import re
import subprocess
import sys

from embedtune import progress
from tests.helpers import ROOT, cli_env
from tests.helpers.eval import write_params


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_about_every_30_seconds_and_one_at_the_end(capsys):
    clock = Clock()
    with progress.task("synth train", 547, "chunks", terminal=False, clock=clock) as bar:
        clock.now += 10
        bar.advance(40, tokens=400)
        assert capsys.readouterr().out == ""  # 10 s: nothing yet
        clock.now += 140
        bar.advance(80, tokens=5750)
        clock.now += 5
        bar.advance(5)  # 5 s after the last line: none
        clock.now += 400
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "synth train: 120/547 chunks, 0.8 chunks/s, 41 tokens/s, 2m30s, ETA 8m54s",
        "synth train: 125/547 chunks, 0.2 chunks/s, 11 tokens/s, 9m15s, ETA 31m14s",
    ]


def test_an_unknown_total_gives_no_eta_and_durations_read_as_time():
    clock = Clock()
    bar = progress.Task("train full", None, "steps", terminal=False, clock=clock)
    clock.now += 3725
    bar.advance(7450)
    assert bar.line() == "train full: 7450 steps, 2.0 steps/s, 1h02m"
    assert [progress.duration(s) for s in (0, 59.6, 61, 3599)] == ["0s", "1m00s", "1m01s", "59m59s"]


def test_advance_reaches_the_innermost_task_of_its_unit(capsys):
    progress.advance(3, "texts")  # no task: nothing happens
    with progress.task("outer", 10, "texts", terminal=False) as outer:
        with progress.task("inner", 4, "questions", terminal=False) as inner:
            progress.advance(2, "texts")
            progress.advance(4, "questions")
    assert (outer.done, inner.done) == (2, 4)
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == [
        "inner",
        "outer",
    ]


def test_a_stage_with_stdout_piped_prints_its_progress_lines(eval_workdir):
    write_params(eval_workdir)
    proc = subprocess.run(
        [sys.executable, "-m", "embedtune.eval"],
        cwd=eval_workdir,
        env=cli_env(ROOT / "src"),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    found = re.findall(
        r"^eval (\w+( corpus)?): (\d+)/(\d+) questions, [\d.]+ questions/s, \d+s$",
        proc.stdout,
        flags=re.M,
    )
    assert [(name, done, total) for name, _, done, total in found] == [
        ("validation", "4", "4"),
        ("train", "3", "3"),
        ("seen corpus", "2", "2"),
    ]
