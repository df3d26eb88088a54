"""Stage `train`: tune the base model on the training questions, the way `train.method` says.

Usage: python -m embedtune.train   (reads params.yaml; run by `dvc repro`)

The methods live in `embedtune.train.methods` (one module each: `adapter_linear`, `adapter_2layer`,
`full`, ...). Trains on the questions `mine` kept (data/mined/train.json), with their hard
negatives; the seen-corpus questions are never seen here. The questions of
`train.holdout_fraction` of the training chunks are held out; after every epoch their MRR@10
against the whole training corpus scores the epoch, and the best one is kept only if it beats
the untrained model beyond the slice's noise (`train.selection_confidence`); `train.patience`
stops early. The validation split is never read here. `full` also trains across processes:
`torchrun --nproc_per_node N -m embedtune.train` (see `embedtune.train.distributed`). Writes
models/tuned/ (config.json names the method) and metrics/train/ (loss per step, held-out
MRR@10 per epoch, the selection).
"""

from __future__ import annotations

from embedtune import io, progress
from embedtune.config import EmbedConfig, load_params
from embedtune.retrieval.bootstrap import format_interval
from embedtune.retrieval.selection import HELDOUT_NAME
from embedtune.stage import run_stage
from embedtune.train import distributed
from embedtune.train.methods.base import (
    TrainingInputs,
    TrainingLog,
    get_method,
    method_config,
    save_tuned,
)

PARAMS = {"seed": int, "embed": EmbedConfig, "train": method_config}


def main() -> None:
    from dvclive import Live

    params = load_params(PARAMS)
    cfg = params.train
    distributed.setup(cfg.method)
    inputs = TrainingInputs.stored(params.embed)
    if not distributed.is_main_process():  # trains its share; the first process writes
        get_method(cfg.method).train(inputs, cfg, params.seed, TrainingLog())
        return
    live = Live(str(io.METRICS_DIR / "train"), dvcyaml=False, save_dvc_exp=False)
    with live, progress.task(f"train {cfg.method}", None, "steps") as steps:

        def log_step(step: int, loss: float) -> None:
            live.step = step
            live.log_metric("loss", loss)
            steps.advance()

        def log_epoch(epoch: int, step: int, metrics: dict[str, float]) -> None:
            live.step = step
            for name, value in metrics.items():
                live.log_metric(f"heldout/{name}", value)
            print(f"epoch {epoch}: held-out {HELDOUT_NAME} {metrics[HELDOUT_NAME]:.4f}")
            if not steps.terminal:
                print(steps.line(), flush=True)

        def log_selection(best: int, kept: int, gain: dict) -> None:
            live.summary["heldout"].update(
                {"best_epoch": best, "kept_epoch": kept, f"gain_{HELDOUT_NAME}": gain}
            )
            print(selection_line(best, kept, gain))

        log = TrainingLog(log_step, log_epoch, log_selection)
        model = get_method(cfg.method).train(inputs, cfg, params.seed, log)
        save_tuned(model, io.TUNED_DIR)
    print(f"{cfg.method} saved to {io.TUNED_DIR}")


def selection_line(best: int, kept: int, gain: dict) -> str:
    verdict = (
        f"epoch {kept} kept"
        if kept
        else "the untrained model kept: training did not beat it beyond the held-out noise"
    )
    return f"best epoch {best}: held-out {HELDOUT_NAME} {format_interval(gain)}; {verdict}"


if __name__ == "__main__":
    run_stage("train", main)
