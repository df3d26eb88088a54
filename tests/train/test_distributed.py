"""`full` across processes: `torchrun --nproc_per_node 2` with the gloo backend on the CPU, each
process on its own share of the batches, one model saved; other methods are refused."""

from __future__ import annotations

import json
import pydoc_data.topics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from embedtune.train.methods.base import load_tuned
from tests.helpers import cli_env
from tests.helpers.train import stage_folder, write_split

SRC = Path(__file__).resolve().parents[2] / "src"


def pydoc_pairs(count: int) -> dict:
    """`count` (question, chunk) pairs from the Python reference that ships with CPython."""
    topics = sorted(pydoc_data.topics.topics)[:count]
    text = pydoc_data.topics.topics
    return {
        "queries": {
            f"q{i}": f"What does the reference say about {t}?" for i, t in enumerate(topics)
        },
        "corpus": {f"c{i}": " ".join(text[t].split()[:60]) for i, t in enumerate(topics)},
        "relevant_docs": {f"q{i}": [f"c{i}"] for i in range(count)},
    }


def train_folder(folder: Path, method: str = "full") -> Path:
    """24 pairs: 12 held out (the best epoch is loaded back from a checkpoint), 12 train in
    batches of 3, so one process takes 4 steps an epoch and two take 2 each."""
    folder.mkdir()
    stage_folder(
        folder,
        [f"train={method}"],
        epochs=2,
        batch_size=3,
        holdout_fraction=0.5,
        holdout_min_questions=12,
        selection_confidence=None,
    )
    write_split(folder, pydoc_pairs(24))
    return folder


def run_train(folder: Path, launcher: list[str], env: dict | None = None):
    return subprocess.run(
        [*launcher, "-m", "embedtune.train"],
        cwd=folder,
        env={**cli_env(SRC), **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_torchrun_two_processes_share_the_steps_and_save_one_model(tmp_path, minilm):
    one = train_folder(tmp_path / "one")
    two = train_folder(tmp_path / "two")
    alone = run_train(one, [sys.executable])
    assert alone.returncode == 0, alone.stderr[-3000:]
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2"]
    scratch = tmp_path / "tmp"  # the processes' temporary folder: checkpoints go there
    scratch.mkdir()
    shared = run_train(two, torchrun, env={"TMPDIR": str(scratch)})
    assert shared.returncode == 0, shared.stderr[-3000:]

    steps = {
        f.name: json.loads((f / "metrics/train/metrics.json").read_text())["step"]
        for f in (one, two)
    }
    assert steps == {"one": 8, "two": 4}  # 2 epochs x 4 batches, shared by 2 processes
    assert shared.stdout.count("full saved to models/tuned") == 1  # only the first process writes
    assert not list(scratch.glob("embedtune-checkpoints-*"))  # removed once all have loaded

    tuned = load_tuned(two / "models/tuned")
    text = ["What does the reference say about assert?"]
    trained, base = tuned.encoder.encode(text), minilm.encode(text)
    assert not torch.allclose(torch.tensor(trained), torch.tensor(base), atol=1e-4)


def test_a_method_that_trains_in_one_process_is_refused(tmp_path):
    folder = train_folder(tmp_path / "adapter", method="adapter_linear_cpu")
    proc = run_train(folder, [sys.executable], env={"WORLD_SIZE": "2", "RANK": "0"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "embedtune train: error: train.method=adapter_linear trains in one process, but 2 "
        "were started: run it with `python -m embedtune.train` (across processes: full)"
    )
    assert not (folder / "models").exists()
