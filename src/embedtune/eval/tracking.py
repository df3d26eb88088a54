"""Optional MLflow logging (off by default), e.g. for DagsHub's MLflow UI.

Turn it on with `EMBEDTUNE_MLFLOW=1` plus MLflow's own variables, for DagsHub:
`MLFLOW_TRACKING_URI=https://dagshub.com/OWNER/REPO.mlflow`, `MLFLOW_TRACKING_USERNAME=OWNER`,
`MLFLOW_TRACKING_PASSWORD=$DAGSHUB_TOKEN`. An environment switch rather than a parameter, so
turning it on never makes DVC re-run a stage; nothing secret is logged.

Logging never costs the evaluation: a server that does not answer a TCP connect within
`CONNECT_TIMEOUT` seconds, MLflow missing, or a failed request is one warning line on stderr
and the stage goes on. MLflow's own retries (7, about 4 minutes) are cut to `RETRY_DEFAULTS`
unless the `MLFLOW_HTTP_REQUEST_*` variables are set.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from embedtune.config import read_params
from embedtune.io import PARAMS_FILE

SWITCH = "EMBEDTUNE_MLFLOW"
EXPERIMENT = "embedtune"
CONNECT_TIMEOUT = 5.0  # seconds to wait for the tracking server's TCP port
# MLflow's retry settings while we log, unless set: fail within about a minute, not four.
RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


class Unreachable(Exception):
    """The tracking server does not accept connections."""


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


def check_reachable(uri: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise `Unreachable` when `uri` is an http(s) server whose port refuses or ignores a TCP
    connect for `timeout` seconds; other URIs (a local store, databricks) are not checked."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            pass
    except TimeoutError:
        raise Unreachable(f"no answer in {timeout:g} s") from None
    except (OSError, ValueError) as err:
        raise Unreachable(getattr(err, "strerror", None) or str(err)) from None


@contextmanager
def quick_retries() -> Iterator[None]:
    """MLflow's HTTP retry variables set to `RETRY_DEFAULTS` in this block, where unset."""
    added = {k: v for k, v in RETRY_DEFAULTS.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def warn(message: str) -> None:
    print(f"embedtune: warning: MLflow run not logged: {message}", file=sys.stderr)


def log_run(run_name: str, params: dict[str, Any], metrics: dict[str, Any]) -> bool:
    """Log one run's params and numeric metrics to MLflow when `EMBEDTUNE_MLFLOW` is on.

    Returns whether the run was logged; a failure is one warning line on stderr, never an error.
    """
    if not enabled():
        return False
    try:
        import mlflow
    except ImportError:
        warn(f"{SWITCH}=1 needs MLflow: pip install mlflow-skinny (or unset {SWITCH})")
        return False
    uri = mlflow.get_tracking_uri()
    try:
        check_reachable(uri)
    except Unreachable as err:
        warn(f"{_safe(uri)} is not reachable ({err}): start the server, or unset {SWITCH}")
        return False
    numeric = {
        k.replace("@", "_at_"): float(v)
        for k, v in flatten(metrics).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    try:
        with quick_retries():
            mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT))
            with mlflow.start_run(run_name=run_name):
                mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})
                mlflow.log_metrics(numeric)
    except Exception as err:  # noqa: BLE001 (optional logging must never fail the stage)
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        warn(f"{_safe(uri)} failed ({type(err).__name__}: {why}): check MLFLOW_TRACKING_*")
        return False
    return True


def _safe(uri: str) -> str:
    """`uri` without any user:password part."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def log_eval(method: str, metrics: dict, delta: dict, params_path: Path = PARAMS_FILE) -> bool:
    """Send the validation figures and every parameter to MLflow when the switch is on;
    whether they were sent (see `log_run`).

    The parameters are read raw from params.yaml for the record only: no figure depends on the
    ones `eval` does not list, so DVC need not rerun `eval` when they change.
    """
    if not enabled():
        return False
    params = read_params(params_path)
    lr = params.get("train", {}).get("lr")
    run_name = f"{method} lr={lr:g}" if isinstance(lr, int | float) else method
    return log_run(run_name, params, {**metrics, "delta": delta})
