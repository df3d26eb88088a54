"""The faults a robustness probe of the pipeline found, each reproduced on the real stages:
every one ends in one line naming the file, parameter or cause and what to do, and nothing
already produced is lost.

Parallel runs rewriting params.yaml, truncated and half-written pipeline files, a stage run
before its inputs exist, a read-only models/, checkpoints a killed `train` left in the temporary
directory, a benchmark file that is not UTF-8, an MLflow server that is down, `chunk` before
`download`, `make params` after a cpu-preset run. (Divergence at a huge train.lr:
tests/train/methods; invalid YAML in conf/: tests/test_compose.py; `--git-url=--mirror=push`:
tests/tools/test_remote.py.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import embedtune.eval.__main__ as eval_stage
import embedtune.mine.__main__ as mine_stage
import embedtune.select.__main__ as select_stage
import embedtune.train.__main__ as train_stage
from embedtune import io
from embedtune.compose import compose
from embedtune.stage import run_stage
from tests.helpers import ROOT, cli_env
from tests.helpers.eval import write_params
from tests.helpers.methods import synthetic
from tests.helpers.system import closed_port, unprivileged
from tests.helpers.train import stage_folder, write_split

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def stage_command(stage: str, cwd: Path, **popen) -> subprocess.Popen:
    """`python -m embedtune.<stage>` in `cwd`, as dvc runs it."""
    env = {**cli_env(ROOT / "src"), "EMBEDTUNE_CACHE_DIR": str(cwd.parent / "cache")}
    return subprocess.Popen(
        [sys.executable, "-m", f"embedtune.{stage}"],
        cwd=cwd,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def one_line(proc: subprocess.Popen, timeout: float = 300) -> str:
    """The stage's only line on stderr, once it has exited 2."""
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 2, err
    assert len(err.splitlines()) == 1, err
    return err.strip()


def fails_in_process(capsys, stage: str, main) -> str:
    with pytest.raises(SystemExit) as info:
        run_stage(stage, main)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A clone with params.yaml (the linear adapter, a few epochs) and the training split."""
    folder = tmp_path / "clone"
    folder.mkdir()
    (emb, dataset), _ = synthetic()
    stage_folder(folder, [], epochs=3, batch_size=16, holdout_fraction=0.0, patience=0)
    write_split(folder, dataset, emb)
    return folder


# --- 1. two `dvc exp run` in one workspace ------------------------------------------------


def open_for_writing(fifo: Path, reader: subprocess.Popen, timeout: float = 120) -> int:
    """Open `fifo` for writing once `reader` has opened it for reading."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            if reader.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the stage never read {fifo}: {reader.communicate()}")
            time.sleep(0.05)


def test_params_yaml_rewritten_by_another_run_fails_the_running_stage(workspace):
    qa = workspace / io.QA_DIR / "train.json"
    dataset = qa.read_bytes()
    qa.unlink()
    os.mkfifo(qa)  # the stage blocks on its input, after reading params.yaml
    proc = stage_command("train", workspace)
    fd = open_for_writing(qa, proc)
    # The second run composes its params.yaml while the first one trains.
    stage_folder(workspace, [], epochs=3, batch_size=16, holdout_fraction=0.0, lr=1e30)
    os.set_blocking(fd, True)
    with os.fdopen(fd, "wb") as f:
        f.write(dataset)
    assert one_line(proc) == (
        "embedtune train: error: params.yaml changed while train ran (another run in this "
        "workspace?): use `dvc exp run --queue` for parallel runs"
    )
    # nothing produced is lost: the model of the params it read, which dvc.lock does not record
    assert json.loads((workspace / "models/tuned/config.json").read_text())["method"]


# --- 2. `-S train.lr=1e30` -----------------------------------------------------------------


def test_a_huge_train_lr_stops_the_stage_naming_it(workspace, monkeypatch, capsys):
    held_out = {"holdout_fraction": 0.25, "holdout_min_questions": 0}
    stage_folder(workspace, [], epochs=3, batch_size=16, patience=0, lr=1e30, **held_out)
    monkeypatch.chdir(workspace)
    err = fails_in_process(capsys, "train", train_stage.main)  # one line
    # The whole message: tests/train/methods/test_adapter_training.py.
    assert re.match(r"embedtune train: error: training diverged .*train\.lr=1e\+30", err), err
    assert not (workspace / io.TUNED_DIR).exists()  # no epoch was kept


# --- 3. truncated and half-written pipeline files -------------------------------------------


def test_truncated_tuned_model_is_one_line_naming_it(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    train_stage.main()
    weights = workspace / io.TUNED_DIR / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    err = one_line(stage_command("select", workspace))
    assert err.startswith("embedtune select: error: models/tuned/model.safetensors is damaged (")
    assert err.endswith(
        ": restore it with `dvc checkout models/tuned` or rebuild it with `dvc repro train`"
    )
    assert not (workspace / io.RETRIEVER_DIR).exists()


@pytest.mark.parametrize(
    ("stage", "main"), [("mine", mine_stage.main), ("train", train_stage.main)]
)
def test_half_written_questions_are_one_line_naming_them(
    workspace, monkeypatch, capsys, stage, main
):
    monkeypatch.chdir(workspace)
    qa = io.QA_DIR / "train.json"
    qa.write_text(qa.read_text()[:1000])
    err = fails_in_process(capsys, stage, main)
    assert err.startswith(f"embedtune {stage}: error: data/qa/train.json is damaged (")
    assert err.endswith(
        ": restore it with `dvc checkout data/qa` or rebuild it with `dvc repro synth`"
    )


def test_damaged_embeddings_and_mined_file(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    embeddings = io.EMBEDDINGS_DIR / "train.safetensors"
    embeddings.write_bytes(embeddings.read_bytes()[:-100])
    err = fails_in_process(capsys, "mine", mine_stage.main)
    assert "data/embeddings/train.safetensors is damaged (" in err
    assert err.endswith("`dvc checkout data/embeddings` or rebuild it with `dvc repro embed`")
    (io.MINED_DIR / "train.json").write_text('{"seen_corpus": []}')  # keys missing
    err = fails_in_process(capsys, "train", train_stage.main)
    assert "data/mined/train.json is damaged (" in err and err.endswith("`dvc repro mine`")


# --- 4. a stage run before its inputs exist -------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ("synth", "data/chunks/train.jsonl not found: run `dvc repro chunk` first"),
        ("chunk", "data/raw/train not found: run `dvc repro download` first"),  # case 10
    ],
)
def test_a_stage_on_a_fresh_clone_names_its_missing_input(tmp_path, stage, message):
    clone = tmp_path / "clone"
    clone.mkdir()
    stage_folder(clone, [])  # params.yaml only, as in a fresh clone
    assert one_line(stage_command(stage, clone)) == f"embedtune {stage}: error: {message}"
    assert sorted(p.name for p in clone.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize(
    ("stage", "main", "missing"),
    [
        ("mine", mine_stage.main, "data/qa/train.json not found: run `dvc repro synth` first"),
        (
            "select",
            select_stage.main,
            "models/tuned/config.json not found: run `dvc repro train`",
        ),
    ],
)
def test_later_stages_on_a_fresh_clone(tmp_path, monkeypatch, capsys, stage, main, missing):
    stage_folder(tmp_path, [])
    monkeypatch.chdir(tmp_path)
    assert missing in fails_in_process(capsys, stage, main)


# --- 6. a read-only models/ -----------------------------------------------------------------


def test_read_only_models_is_refused_before_training(workspace, monkeypatch, capsys):
    import dvclive  # noqa: F401  (imported before the stage runs as another user)

    for path in workspace.rglob("*.json"):  # atomic writes leave 0600, as mkstemp makes them
        path.chmod(0o644)
    (workspace / "models").mkdir(mode=0o555)
    monkeypatch.chdir(workspace)
    with unprivileged(workspace):
        err = fails_in_process(capsys, "train", train_stage.main)
    assert err == (
        "embedtune train: error: models/ is not writable (Permission denied): make it writable "
        "(e.g. `chmod u+w models`) and run again"
    )
    assert capsys.readouterr().out == ""  # no epoch was trained
    assert not (workspace / "metrics").exists() and not any((workspace / "models").iterdir())


# --- 7. checkpoints of a killed `train` -----------------------------------------------------

HOLD_CHECKPOINTS = """
import time
from embedtune.train.methods.checkpoints import checkpoint_space
with checkpoint_space() as folder:
    (folder / "checkpoint-1").mkdir()
    print(folder, flush=True)
    time.sleep(600)
"""


def holding_checkpoints(tmp: Path) -> tuple[subprocess.Popen, Path]:
    """A process inside `checkpoint_space` (as `train` is while the trainer runs), with the
    temporary directory `tmp`; and its checkpoint folder."""
    env = {**cli_env(ROOT / "src"), "TMPDIR": str(tmp)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_CHECKPOINTS], env=env, stdout=subprocess.PIPE, text=True
    )
    folder = Path(proc.stdout.readline().strip())
    assert folder.parent == tmp and (folder / "checkpoint-1").is_dir()
    return proc, folder


def test_checkpoints_of_a_killed_train_are_removed_by_the_next_one(tmp_path, monkeypatch):
    from embedtune.train.methods.checkpoints import checkpoint_space

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    killed, left = holding_checkpoints(tmp)
    running, kept = holding_checkpoints(tmp)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert left.is_dir()  # a SIGKILL skips every cleanup
        monkeypatch.setattr("tempfile.tempdir", str(tmp))
        with checkpoint_space() as own:
            assert sorted(tmp.iterdir()) == sorted([kept, own])  # a live run's stays
        assert list(tmp.iterdir()) == [kept]
    finally:
        running.kill()
        running.wait()


# --- 8. a benchmark file with a byte that is not UTF-8 --------------------------------------


def test_a_benchmark_byte_that_is_not_utf8_stops_eval_naming_file_and_line(eval_workdir, capsys):
    folder = eval_workdir
    write_params(folder, benchmarks=["beir/tiny"])
    queries = folder / "beir/tiny/queries.jsonl"
    lines = queries.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"error", b"erreur caf\xe9")  # a Latin-1 e-acute
    queries.write_bytes(b"\n".join(lines))
    column = lines[1].index(b"\xe9") + 1
    assert fails_in_process(capsys, "eval", eval_stage.main) == (
        f"embedtune eval: error: beir/tiny/queries.jsonl:2: not UTF-8 (byte 0xe9 at column "
        f"{column}): save the file as UTF-8"
    )
    assert not (folder / "metrics").exists()


# --- 9. `EMBEDTUNE_MLFLOW=1` with the server down --------------------------------------------


def test_mlflow_server_down_costs_eval_nothing(eval_workdir):
    """`python -m embedtune.eval` as dvc runs it, MLflow on, its port closed: one warning line
    within seconds, exit 0, every metrics file written."""
    folder = eval_workdir
    pytest.importorskip("mlflow")
    write_params(folder, benchmarks=["beir/tiny"])
    uri = f"http://127.0.0.1:{closed_port()}"
    env = {**cli_env(ROOT / "src"), "EMBEDTUNE_MLFLOW": "1", "MLFLOW_TRACKING_URI": uri}
    env["EMBEDTUNE_CACHE_DIR"] = str(folder / "cache")
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "embedtune.eval"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "MLflow" in line]
    assert warnings == [
        f"embedtune: warning: MLflow run not logged: {uri} is not reachable (Connection "
        "refused): start the server, or unset EMBEDTUNE_MLFLOW"
    ], proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - start < 300  # MLflow alone retried for 4 min 24 s
    for name in ("eval", "eval_delta", "eval_train", "benchmarks", "eval_seen"):
        assert json.loads((folder / f"metrics/{name}.json").read_text())


# --- 10. `python -m embedtune.chunk` before `download`: a case of
# test_a_stage_on_a_fresh_clone_names_its_missing_input (section 4)


# --- 11. `make params`, then `dvc repro`, after a cpu-preset run ----------------------------


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_params_takes_the_runs_overrides(tmp_path):
    """`make params OVERRIDES=...` composes what `dvc exp run -S ...` did; bare, the GPU recipe
    (whose `download` would replace data/raw with the arXiv PDFs)."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    venv = Path(sys.executable).parent.parent
    installed = venv / "bin" / ".installed"  # `setup` is done: never reinstall here
    make = ["make", "-s", f"VENV={venv}", "-o", str(installed), "params"]
    env = cli_env(ROOT / "src")

    def composed(*overrides: str) -> dict:
        compose(list(overrides), conf_dir=ROOT / "conf", output=tmp_path / "expected.yaml")
        return yaml.safe_load((tmp_path / "expected.yaml").read_text())

    run = ["experiment=cpu", "train.lr=0.003"]  # as `dvc exp run -S experiment=cpu -S train.lr=...`
    proc = subprocess.run(
        [*make, f"OVERRIDES={' '.join(run)}"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params == composed(*run)
    assert "arxiv.org" not in str(params["data"]) and params["train"]["lr"] == 0.003

    proc = subprocess.run(make, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params == composed() and "arxiv.org" in str(params["data"])  # the GPU recipe
