"""Stage `train`: tune the base model on the training questions, the way `train.method` says.

Usage: python -m embedtune.train   (reads params.yaml; run by `dvc repro`)

The methods live in `embedtune.methods` (one module each: `adapter_linear`, `adapter_2layer`,
`full`). The questions of `train.holdout_fraction` of the training chunks are held out; after
every epoch their MRR@10 against the whole training corpus picks the epoch whose weights are
kept, and `train.patience` stops early. The validation split is never read here.
Writes models/tuned/ (config.json names the method) and metrics/train/ (loss per step,
held-out MRR@10 per epoch).
"""

from __future__ import annotations

from embedtune import io
from embedtune.config import EmbedConfig, load_params
from embedtune.errors import run_stage
from embedtune.methods.base import (
    TrainingInputs,
    TrainingLog,
    get_method,
    method_config,
    save_tuned,
)
from embedtune.methods.heldout import HELDOUT_NAME

PARAMS = {"seed": int, "embed": EmbedConfig, "train": method_config}


def main() -> None:
    from dvclive import Live

    params = load_params(PARAMS)
    cfg = params.train
    inputs = TrainingInputs(
        io.load_qa("train"), params.embed, io.EMBEDDINGS_DIR / "train.safetensors"
    )
    epochs: list[tuple[int, float]] = []
    with Live(str(io.METRICS_DIR / "train"), dvcyaml=False, save_dvc_exp=False) as live:

        def log_step(step: int, loss: float) -> None:
            live.step = step
            live.log_metric("loss", loss)

        def log_epoch(epoch: int, step: int, metrics: dict[str, float]) -> None:
            live.step = step
            for name, value in metrics.items():
                live.log_metric(f"heldout/{name}", value)
            epochs.append((epoch, metrics[HELDOUT_NAME]))
            print(f"epoch {epoch}: held-out {HELDOUT_NAME} {metrics[HELDOUT_NAME]:.4f}")

        method = get_method(cfg.method)
        model = method.train(inputs, cfg, params.seed, TrainingLog(log_step, log_epoch))
        save_tuned(model, io.TUNED_DIR)
        candidates = [e for e in epochs if method.untrained_is_candidate or e[0] > 0]
        if candidates:
            best_epoch, best = max(candidates, key=lambda e: e[1])  # first of equals wins
            live.summary["heldout"][f"best_{HELDOUT_NAME}"] = best
            live.summary["heldout"]["best_epoch"] = best_epoch
    print(f"{cfg.method} saved to {io.TUNED_DIR}")


if __name__ == "__main__":
    run_stage("train", main)
