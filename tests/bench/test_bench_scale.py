"""bench/bench_scale.py for real on a small generated corpus: every stage after `embed` runs
through its entry point, each reported with seconds and peak memory, then the summary line."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.slow
def test_bench_scale_runs_every_stage_on_planted_data(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/bench_scale.py"), "--chunks", "200"]
        + ["--methods", "adapter_linear", "nudge", "--keep", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = proc.stdout.strip().splitlines()
    stages = [
        line.split()[:2] for line in lines if re.match(r"  \w+ +\w+ +[\d.]+ s +[\d.]+ GB$", line)
    ]
    assert stages == [
        ["mine", "adapter_linear"],
        *(
            [name, method]
            for method in ("adapter_linear", "nudge")
            for name in ("train", "select", "eval")
        ),
    ]
    assert re.fullmatch(r"scale: chunks=200 questions=400 peak_gb=[\d.]+ seconds=\d+", lines[-1])
    folder = tmp_path / "chunks-200"
    train = json.loads((folder / "data/qa/train.json").read_text())
    assert len(train["corpus"]) == 180 and len(train["queries"]) == 360
    mined = json.loads((folder / "metrics/mine.json").read_text())
    assert mined["questions"] == 360 and mined["negatives"] == 0
    assert (folder / "metrics/eval.json").is_file()
