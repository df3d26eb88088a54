"""The prepared GPU synth benchmark, run in its CPU smoke-test mode so it cannot rot unseen."""

from __future__ import annotations

import json
import re
import sys

import pytest

from embedtune.synth.llm.transformers_chat import TransformersConfig
from tests.helpers import cfg, run_cli

pytestmark = pytest.mark.slow


def test_prepare_then_tiny_run(tmp_path, root):
    inputs = tmp_path / "inputs"
    # prepare also runs bench_synth.benchmark_chunks: our download and chunk code.
    run_cli([sys.executable, "bench/gpu_synth.py", "prepare", str(inputs), "--chunks", "6"], root)
    prompts = json.loads((inputs / "prompts.json").read_text())
    assert len(prompts) == 6
    assert all("Write 2 different questions" in p for p in prompts)
    assert (inputs / "tokenizer" / "tokenizer.json").is_file()
    # The cpu preset's llm section, complete: `run` needs no Hydra on the GPU machine.
    preset = json.loads((inputs / "llm.json").read_text())
    assert TransformersConfig.model_validate(preset, strict=True) == cfg("llm")

    args = ["--tiny", "--max-new-tokens", "5", "--reference-chunks", "2", "--batch-size", "4"]
    out = run_cli([sys.executable, "bench/gpu_synth.py", "run", str(inputs), *args], root).stdout
    lines = out.strip().splitlines()
    reference = re.search(r"reference.*?(\d+) chunks .*?(\d+) tokens", out)
    ours = re.search(r"embedtune batched.*?(\d+) chunks .*?(\d+) tokens", out)
    assert reference and ours
    assert reference.groups() == ("2", "10")  # random weights: every answer runs to the limit
    assert ours.groups() == ("6", "30")
    assert "cpu, zephyr-7b-beta shape (tiny), none, 5 new tokens per chunk, batch size 4" in out
    assert re.fullmatch(r"speedup=\d+\.\d\d", lines[-1])
