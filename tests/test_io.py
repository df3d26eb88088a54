"""Checked reads of pipeline files: a missing, truncated or half-written one is one line naming
it and the `dvc` command that restores it; the folder check that refuses a read-only output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from embedtune import io
from embedtune.errors import EmbedtuneError
from tests.helpers import ROOT
from tests.helpers.system import unprivileged


def test_producers_are_what_dvc_yaml_says_each_stage_writes():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = {
        Path(next(iter(out)) if isinstance(out, dict) else out): name  # `path: {cache: false}`
        for name, stage in stages.items()
        for key in ("outs", "metrics", "plots")
        for out in stage.get(key, [])
    }
    assert io.PRODUCERS == outs


@pytest.mark.parametrize(
    ("path", "out"),
    [
        ("data/qa/train.json", io.QA_DIR),
        ("/somewhere/clone/models/tuned/model.safetensors", io.TUNED_DIR),
        ("data/manifest.json", io.MANIFEST),
        ("data/qa", io.QA_DIR),
        ("data/quality.json", None),
        ("models/other/x", None),
    ],
)
def test_output_of(path, out):
    assert io.output_of(path) == out


def test_read_json_missing(tmp_path):
    with pytest.raises(
        EmbedtuneError, match=r"^data/mined/train\.json not found: run `dvc repro mi"
    ):
        io.read_json(Path("data/mined/train.json"))
    with pytest.raises(EmbedtuneError, match=r"x\.json not found: run `dvc repro train` first$"):
        io.read_json(tmp_path / "x.json", stage="train")


def test_half_written_json_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "data" / "qa" / "train.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"queries": {"q0": "What is a loop?"}})[:20])
    with pytest.raises(EmbedtuneError) as info:
        io.read_json(path)
    # Ours: the file and the fix; in brackets, one line of the JSON parser's own words.
    fix = "restore it with `dvc checkout data/qa` or rebuild it with `dvc repro synth`"
    ours = re.escape(f"{path} is damaged (") + r"[^\n]+" + re.escape(f"): {fix}")
    assert re.fullmatch(ours, str(info.value)), str(info.value)
    path.write_bytes(b'{"queries": "\xff"}')  # not UTF-8
    with pytest.raises(EmbedtuneError, match=r"train\.json is damaged \('utf-8' codec can't"):
        io.read_json(path)


def test_half_written_jsonl(tmp_path):
    path = tmp_path / "data" / "chunks" / "train.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text('{"id": "a", "text": "x"}\n{"id": "b", "te')
    with pytest.raises(EmbedtuneError, match=r"train\.jsonl is damaged .*`dvc repro chunk`$"):
        io.read_jsonl(path)
    path.write_text('{"id": "a", "text": "x"}\n\n')
    assert io.read_jsonl(path) == [{"id": "a", "text": "x"}]


@pytest.fixture
def weights(tmp_path) -> Path:
    path = tmp_path / "models" / "tuned" / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file({"w": torch.arange(64.0).reshape(8, 8)}, str(path), metadata={"k": "v"})
    return path


def test_read_safetensors(weights):
    tensors, metadata = io.read_safetensors(weights)
    assert torch.equal(tensors["w"], torch.arange(64.0).reshape(8, 8))
    assert metadata == {"k": "v"}
    io.check_safetensors(weights)


@pytest.mark.parametrize("keep", [0, 8, 40, -16])  # bytes kept: none, header length, in tensors
def test_truncated_safetensors_names_the_file_and_the_fix(weights, keep):
    weights.write_bytes(weights.read_bytes()[:keep])
    fix = r"restore it with `dvc checkout models/tuned` or rebuild it with `dvc repro train`"
    for read in (io.read_safetensors, io.check_safetensors):
        with pytest.raises(EmbedtuneError, match=rf"^{weights} is damaged \(.+\): {fix}$"):
            read(weights)


def test_missing_safetensors(tmp_path):
    with pytest.raises(EmbedtuneError, match=r"y\.safetensors not found: run `dvc repro embed`"):
        io.read_safetensors(tmp_path / "y.safetensors", stage="embed")


def test_check_writable_makes_the_folder(tmp_path):
    io.check_writable(tmp_path / "models")
    assert (tmp_path / "models").is_dir() and not any((tmp_path / "models").iterdir())


def test_check_writable_refuses_a_read_only_folder(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir(mode=0o555)
    monkeypatch.chdir(tmp_path)
    with unprivileged(tmp_path), pytest.raises(EmbedtuneError) as info:
        io.check_writable("models")
    assert str(info.value) == (
        "models/ is not writable (Permission denied): make it writable "
        "(e.g. `chmod u+w models`) and run again"
    )
    assert not any((tmp_path / "models").iterdir())
