"""Shared fixtures: the repository root, the small models (one session-scoped fixture each), the
session's shrunk pipeline run, and an `eval` working directory. Plain helpers: tests/helpers/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import ROOT, SHRUNK, cfg, copy_project, run_cli


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (small models train faster so on 2 cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def minilm():
    """all-MiniLM-L6-v2 from its PyPI package, on the CPU in float32 (do not train it in place:
    use `load_encoder(cfg("embed"), for_training=True)` for a model to train)."""
    from embedtune.embeddings import load_encoder

    return load_encoder(cfg("embed"))


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct (GGUF, from its PyPI package) loaded through our transformers
    backend with the cpu preset's settings (seed 0)."""
    from embedtune.synth.llm.transformers_chat import TransformersChat

    return TransformersChat(cfg("llm"), seed=0).load()


@pytest.fixture(scope="session")
def shrunk_run(tmp_path_factory, worker_id) -> Path:
    """A fresh copy of the project after one `dvc exp run` with SHRUNK, results not committed.
    Made once per test session: pytest-xdist workers share it (the first to ask makes it, the
    others wait for it); copy it with `copy_run` before changing anything."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    base = base if worker_id == "master" else base.parent  # the session's, shared by workers
    folder, template = base / "shrunk-run", base / "shrunk-run" / "repo"
    with open(base / "shrunk-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            template.mkdir(parents=True)
            first = run_cli(["dvc", "exp", "run", *SHRUNK], copy_project(template))
            assert "Running stage 'synth'" in first.stdout
            (folder / "done").write_text("")
    return template


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="module")
def eval_base_embeddings(minilm) -> dict:
    """The base embeddings of `tests.helpers.eval.SPLITS`, as `embed` writes them."""
    from embedtune.embeddings import embed_dataset
    from tests.helpers.eval import SPLITS

    return {split: embed_dataset(minilm, data, cfg("embed")) for split, data in SPLITS.items()}


@pytest.fixture
def eval_workdir(tmp_path, monkeypatch, eval_base_embeddings) -> Path:
    """What `synth`, `embed`, `train` and `select` leave for `eval`, in a fresh working
    directory (and a cache of its own, never the user's); params.yaml: `write_params`."""
    from embedtune import io
    from embedtune.embeddings import save_embeddings
    from embedtune.mine.mined import MINED_FILE, Mined
    from embedtune.train.methods.base import save_tuned
    from tests.helpers.eval import SHIPPED, SPLITS, scrambling_adapter, ship
    from tests.helpers.retrieval import write_beir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(io.CACHE_ENV, str(tmp_path / "cache"))
    for split, dataset in SPLITS.items():
        io.write_json(io.QA_DIR / f"{split}.json", dataset)
        save_embeddings(io.EMBEDDINGS_DIR / f"{split}.safetensors", eval_base_embeddings[split])
    save_tuned(scrambling_adapter(), io.TUNED_DIR)
    write_beir(tmp_path / "beir" / "tiny")
    mined = Mined(["q-del", "q-yield"], {}, {"q-with": []})  # two questions set aside by `mine`
    io.write_json(MINED_FILE, mined.as_dict())
    ship(SHIPPED)
    return tmp_path
