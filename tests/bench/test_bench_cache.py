"""bench/bench_cache.py for real on a small cache: it writes, then serves every answer from it."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.helpers import ROOT


def test_bench_cache_writes_then_serves_every_entry(tmp_path):
    folder = tmp_path / "cache"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench/bench_cache.py"),
            "--entries",
            "300",
            "--folder",
            folder,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"cache: entries=300 write_s=[\d.]+ hit_s=[\d.]+ hit_us_per_entry=\d+", last
    )
    assert len(list(folder.rglob("*.json"))) == 300
