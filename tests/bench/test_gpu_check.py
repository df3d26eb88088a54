"""The prepared GPU check, run in its CPU smoke-test mode (tiny shapes) so it cannot rot unseen:
every part runs our code and reports figures, none an error."""

from __future__ import annotations

import json
import sys

import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.slow


def test_prepare_then_tiny_run_reports_every_part(tmp_path, root):
    inputs, out = tmp_path / "inputs", tmp_path / "figures.json"
    prepare = ["bench/gpu_check.py", "prepare", str(inputs), "--chunks", "4", "--pairs", "64"]
    run_cli([sys.executable, *prepare], root)
    sections = json.loads((inputs / "sections.json").read_text())
    assert (
        sections["full"]["method"] == "full" and sections["cached"]["loss"]["name"] == "cached_mnrl"
    )
    assert sections["adapter"]["method"] == "adapter_linear"
    assert len(json.loads((inputs / "pairs.json").read_text())) == 64

    args = ["--tiny", "--out", str(out), "--max-new-tokens", "4", "--reference-chunks", "2"]
    run_cli([sys.executable, "bench/gpu_check.py", "run", str(inputs), *args], root)
    figures = json.loads(out.read_text())
    parts = ["synth", "embed", "full_bf16", "full_cached_mnrl_32", "adapter"]
    assert [p for p in parts if "error" in figures[p]] == []
    assert figures["synth"]["batched"]["tokens"] == 4 * 4  # 4 prompts run to the limit
    assert figures["embed"]["cosine_agreement"]["min"] > 0.99
    assert figures["full_bf16"]["steps"] == 2  # 64 pairs in batches of 32
    assert figures["full_cached_mnrl_32"]["steps"] == 2
    assert figures["adapter"]["seconds"] > 0
