"""The prepared GPU synth benchmark, run in its CPU smoke-test mode so it cannot rot unseen."""

from __future__ import annotations

import json
import re
import sys

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_prepare_then_tiny_run(tmp_path, root):
    inputs = tmp_path / "inputs"
    run_cli([sys.executable, "bench/gpu_synth.py", "prepare", str(inputs), "--chunks", "6"], root)
    prompts = json.loads((inputs / "prompts.json").read_text())
    assert len(prompts) == 6
    assert all("Write 2 different questions" in p for p in prompts)
    assert (inputs / "tokenizer" / "tokenizer.json").is_file()

    args = ["--tiny", "--max-new-tokens", "5", "--reference-chunks", "2", "--batch-size", "4"]
    out = run_cli([sys.executable, "bench/gpu_synth.py", "run", str(inputs), *args], root).stdout
    lines = out.strip().splitlines()
    reference = re.search(r"reference.*?(\d+) chunks .*?(\d+) tokens", out)
    ours = re.search(r"embedtune batched.*?(\d+) chunks .*?(\d+) tokens", out)
    assert reference and ours
    assert reference.groups() == ("2", "10")  # random weights: every answer runs to the limit
    assert ours.groups() == ("6", "30")
    assert re.fullmatch(r"speedup=\d+\.\d\d", lines[-1])
