"""Training across processes: which process this is, under `torchrun` or `accelerate launch`.

Both launchers set RANK, LOCAL_RANK and WORLD_SIZE; the sentence-transformers trainer (through
accelerate) then runs distributed data parallel, each process on its own share of the batches.
Every process runs the whole `train` stage; only the first one writes models/ and metrics/.
"""

from __future__ import annotations

import os
from pathlib import Path

from embedtune.errors import EmbedtuneError

DISTRIBUTED_METHODS = ("full",)  # the methods that train through the trainer's DDP


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def setup(method: str) -> None:
    """Refuse a method that cannot share its work; give each process its own GPU."""
    if world_size() == 1:
        return
    if method not in DISTRIBUTED_METHODS:
        raise EmbedtuneError(
            f"train.method={method} trains in one process, but {world_size()} were started: "
            f"run it with `python -m embedtune.train` (across processes: "
            f"{', '.join(DISTRIBUTED_METHODS)})"
        )
    import torch

    if torch.cuda.is_available():  # "cuda" then means this process's GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def checkpoint_folder(temporary: Path) -> Path:
    """Where the trainer keeps epoch checkpoints: `temporary` in one process; across processes
    a folder every process of the run names alike, since each loads the best one from it."""
    if world_size() == 1:
        return temporary
    run = os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("MASTER_PORT", "run")
    return temporary.parent / f"embedtune-checkpoints-{run}"
