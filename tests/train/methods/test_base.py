"""The method interface: the `train` section's schema by method, saving a tuned model in one
atomic step, loading one by the method its config.json names, and the training inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
import torch

from embedtune.config import parse_section
from embedtune.embeddings import SplitEmbeddings, save_embeddings
from embedtune.errors import EmbedtuneError
from embedtune.train.methods.adapters import AdapterModel
from embedtune.train.methods.base import (
    METHODS,
    Method,
    TrainConfig,
    TrainingInputs,
    TrainingLog,
    get_method,
    load_tuned,
    method_config,
    save_tuned,
    saved_config,
)
from embedtune.train.methods.full import FullConfig, FullMethod
from embedtune.train.methods.linear import LinearAdapter, LinearConfig, LinearMethod
from embedtune.train.methods.two_layer import TwoLayerConfig, TwoLayerMethod
from tests.helpers import cfg, composed

# --- the train section's schema -------------------------------------------------------------


def test_the_registry_knows_every_method():
    assert {"adapter_linear", "adapter_2layer", "full"} <= set(METHODS.names())
    assert METHODS.key == "train.method"
    for name, cls in [
        ("adapter_linear", LinearMethod),
        ("adapter_2layer", TwoLayerMethod),
        ("full", FullMethod),
    ]:
        assert isinstance(get_method(name), cls)


@pytest.mark.parametrize(
    ("method", "schema"),
    [("adapter_linear", LinearConfig), ("adapter_2layer", TwoLayerConfig), ("full", FullConfig)],
)
def test_method_config_is_the_named_methods_schema(method, schema):
    assert method_config({"method": method, "lr": 0.1}) is schema
    assert issubclass(schema, TrainConfig)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"method": "magic"}, "train.method='magic' is not known"),
        ({"method": 3}, "train.method=3 is not known"),
        ({}, "missing key train.method"),
        ({"method": None}, "missing key train.method"),
        ("adapter_linear", "missing key train.method"),  # not a mapping
    ],
)
def test_method_config_of_an_unknown_method_names_the_key(raw, problem):
    with pytest.raises(EmbedtuneError) as err:
        method_config(raw)
    assert str(err.value) == f"{problem} (known: adapter_2layer, adapter_linear, full, nudge)"


@pytest.mark.parametrize(
    ("overrides", "schema"),
    [
        (["train=adapter_linear"], LinearConfig),
        (["train=adapter_2layer"], TwoLayerConfig),
        (["train=full"], FullConfig),
        (["experiment=cpu"], FullConfig),  # the preset trains the whole model
        (["experiment=cpu", "train=adapter_linear_cpu"], LinearConfig),
        (["experiment=cpu", "train=adapter_2layer"], TwoLayerConfig),
        (["experiment=cpu", "train=full"], FullConfig),
    ],
)
def test_every_train_group_composes_and_validates(overrides, schema):
    assert type(composed(*overrides).train) is schema


def parse(raw: dict):
    return parse_section("train", raw, method_config)


@pytest.mark.parametrize(
    ("overrides", "edit", "message"),
    [
        ((), {"matryoshka_dims": [2]}, r"unknown key train\.matryoshka_dims"),
        (("train=adapter_2layer",), {"loss": {"name": "mnrl"}}, r"unknown key train\.loss$"),
        (("train=full",), {"hidden_size": 8}, r"unknown key train\.hidden_size"),
        ((), {"lr": -1.0}, r"train\.lr must be greater than 0, got -1\.0"),
        ((), {"batch_size": 1}, r"train\.batch_size must be greater than 1"),
        ((), {"holdout_fraction": 1.0}, r"train\.holdout_fraction must be less than 1"),
        ((), {"optimizer": "rmsprop"}, r"train\.optimizer must be 'adamw', 'adam' or 'sgd'"),
        (
            ("train=full",),
            {"holdout_fraction": 0.0, "patience": 2},
            r"train\.patience needs held-out questions",
        ),
        (("train=adapter_2layer",), {"hidden_size": 0}, r"train\.hidden_size must be greater"),
    ],
)
def test_bad_train_sections(overrides, edit, message):
    raw = {**cfg("train", *overrides).model_dump(), **edit}
    with pytest.raises(EmbedtuneError, match=message):
        parse(raw)


def test_a_missing_key_is_named():
    raw = cfg("train").model_dump()
    del raw["scale"]
    with pytest.raises(EmbedtuneError, match=r"missing key train\.scale"):
        parse(raw)


def test_a_valid_section_round_trips():
    for overrides in [(), ("train=adapter_2layer",), ("train=full", "train/loss=cached_mnrl")]:
        train = cfg("train", *overrides)
        assert parse(train.model_dump()) == train


# --- saving: one atomic step ----------------------------------------------------------------


class Files:
    """A tuned model that writes the given files (or fails halfway)."""

    method = "adapter_linear"

    def __init__(self, files: dict[str, bytes], fail: bool = False):
        self.files, self.fail = files, fail

    def save(self, folder: Path) -> None:
        assert folder.is_dir() and not any(folder.iterdir())  # a fresh, empty folder
        for name, data in self.files.items():
            (folder / name).write_bytes(data)
            if self.fail:
                raise OSError("disk full")


def test_save_tuned_replaces_what_was_there(tmp_path):
    folder = tmp_path / "models" / "tuned"
    save_tuned(Files({"stale.bin": b"\x80old", "config.json": b"{}"}), folder)  # makes parents
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "stale.bin"]
    save_tuned(Files({"config.json": b'{"method": "x"}', "model.safetensors": b"new"}), folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert (folder / "model.safetensors").read_bytes() == b"new"
    assert [p.name for p in folder.parent.iterdir()] == ["tuned"]  # no temporary folder left


def test_a_failed_save_keeps_the_previous_model(tmp_path):
    folder = tmp_path / "tuned"
    save_tuned(Files({"config.json": b"old"}), folder)
    with pytest.raises(OSError, match="disk full"):
        save_tuned(Files({"config.json": b"new", "model.safetensors": b"x"}, fail=True), folder)
    assert [p.name for p in folder.iterdir()] == ["config.json"]
    assert (folder / "config.json").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["tuned"]


# --- loading: by the method config.json names -----------------------------------------------


def test_saved_config_missing(tmp_path):
    with pytest.raises(EmbedtuneError, match=r"config\.json not found.*dvc repro train"):
        saved_config(tmp_path / "nothing")
    with pytest.raises(EmbedtuneError, match=r"config\.json not found.*dvc repro train"):
        load_tuned(tmp_path / "nothing")


@pytest.mark.parametrize("config", [{"method": "magic"}, {}])
def test_load_tuned_unknown_method(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EmbedtuneError) as err:
        load_tuned(tmp_path)
    message = str(err.value)
    assert f"unknown method {config.get('method')!r}" in message
    assert str(tmp_path / "config.json") in message
    assert "adapter_2layer, adapter_linear, full, nudge" in message


class ToyConfig(TrainConfig):
    method: Literal["toy_scale"]


class ToyModel:
    method = "toy_scale"

    def __init__(self, factor: float):
        self.factor = factor

    def encode_queries(self, texts, base):
        return self.factor * base

    def encode_corpus(self, texts, base):
        return base

    def save(self, folder: Path) -> None:
        (folder / "config.json").write_text(json.dumps({"method": "toy_scale", "f": self.factor}))


class ToyMethod(Method):
    Config = ToyConfig
    loaded_with: list = []

    def train(self, inputs, cfg, seed, log):
        return ToyModel(2.0)

    def load(self, folder, embed):
        ToyMethod.loaded_with.append((folder, embed))
        return ToyModel(saved_config(folder)["f"])


@pytest.fixture
def toy_method():
    METHODS.register("toy_scale")(ToyMethod)
    yield ToyMethod
    METHODS.unregister("toy_scale")
    ToyMethod.loaded_with.clear()


def test_load_tuned_dispatches_through_the_registry(tmp_path, toy_method):
    save_tuned(ToyModel(3.0), tmp_path / "tuned")
    embed = cfg("embed")
    loaded = load_tuned(tmp_path / "tuned", embed)
    assert isinstance(loaded, ToyModel) and loaded.factor == 3.0
    assert toy_method.loaded_with == [(tmp_path / "tuned", embed)]
    assert method_config({"method": "toy_scale"}) is ToyConfig
    # An adapter saved beside it still loads as an adapter.
    save_tuned(AdapterModel("adapter_linear", LinearAdapter(3)), tmp_path / "adapter")
    assert isinstance(load_tuned(tmp_path / "adapter"), AdapterModel)


def test_without_the_method_registered_the_folder_is_unknown(tmp_path):
    save_tuned(ToyModel(3.0), tmp_path / "tuned")
    with pytest.raises(EmbedtuneError, match="unknown method 'toy_scale'"):
        load_tuned(tmp_path / "tuned")


# --- the training inputs --------------------------------------------------------------------


def embeddings() -> SplitEmbeddings:
    return SplitEmbeddings(["q0", "q1"], torch.eye(2, 3), ["c0", "c1", "c2"], torch.eye(3))


def test_training_inputs_load_the_embeddings_on_first_use(tmp_path):
    path = tmp_path / "train.safetensors"
    inputs = TrainingInputs({"queries": {}}, cfg("embed"), path)  # no file yet: no error
    save_embeddings(path, embeddings())
    first = inputs.embeddings()
    assert first.query_ids == ["q0", "q1"] and torch.equal(first.corpus, torch.eye(3))
    path.unlink()
    assert inputs.embeddings() is first  # read once


def test_training_inputs_without_embeddings(tmp_path):
    missing = TrainingInputs({}, cfg("embed"), tmp_path / "train.safetensors")
    with pytest.raises(EmbedtuneError, match=r"train\.safetensors not found.*dvc repro embed"):
        missing.embeddings()
    with pytest.raises(ValueError, match="neither embeddings nor embeddings_path"):
        TrainingInputs({}, cfg("embed")).embeddings()
    given = embeddings()
    assert TrainingInputs({}, cfg("embed"), _embeddings=given).embeddings() is given


def test_training_inputs_load_the_encoder_once_in_float32():
    inputs = TrainingInputs({}, cfg("embed", dtype="bfloat16"))
    assert inputs._encoder is None
    encoder = inputs.encoder()
    assert next(encoder.parameters()).dtype == torch.float32  # trained in float32
    assert inputs.encoder() is encoder


def test_training_log_defaults_do_nothing():
    log = TrainingLog()
    assert log.step(1, 0.5) is None and log.epoch(0, 0, {"mrr@10": 0.1}) is None
