"""Optional MLflow logging (off by default), e.g. for DagsHub's MLflow UI.

Turn it on with `EMBEDTUNE_MLFLOW=1` plus MLflow's own variables, for DagsHub:
`MLFLOW_TRACKING_URI=https://dagshub.com/OWNER/REPO.mlflow`, `MLFLOW_TRACKING_USERNAME=OWNER`,
`MLFLOW_TRACKING_PASSWORD=$DAGSHUB_TOKEN`. An environment switch rather than a parameter, so
turning it on never makes DVC re-run a stage; nothing secret is logged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from embedtune.config import PARAMS_FILE, read_params
from embedtune.errors import EmbedtuneError

SWITCH = "EMBEDTUNE_MLFLOW"
EXPERIMENT = "embedtune"


def enabled() -> bool:
    return os.environ.get(SWITCH, "").strip().lower() in ("1", "true", "yes", "on")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"lr": 0.01}}` -> `{"train.lr": 0.01}`; lists become their string form."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def log_run(run_name: str, params: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Log one run's params and numeric metrics to MLflow when `EMBEDTUNE_MLFLOW` is on."""
    if not enabled():
        return
    try:
        import mlflow
    except ImportError:
        raise EmbedtuneError(
            f"{SWITCH}=1 needs MLflow: pip install mlflow-skinny (or unset {SWITCH})"
        ) from None
    numeric = {
        k.replace("@", "_at_"): float(v)
        for k, v in flatten(metrics).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT))
    with mlflow.start_run(run_name=run_name):
        mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})
        mlflow.log_metrics(numeric)


def log_eval(method: str, metrics: dict, delta: dict, params_path: Path = PARAMS_FILE) -> None:
    """Send the validation figures and every parameter to MLflow when the switch is on.

    The parameters are read raw from params.yaml for the record only: no figure depends on the
    ones `eval` does not list, so DVC need not rerun `eval` when they change.
    """
    if not enabled():
        return
    params = read_params(params_path)
    lr = params.get("train", {}).get("lr")
    run_name = f"{method} lr={lr:g}" if isinstance(lr, int | float) else method
    log_run(run_name, params, {**metrics, "delta": delta})
