"""synth is incremental and crash-safe: real dvc, real LLM, real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import cli_env, copy_project, run_cli

pytestmark = pytest.mark.slow

CPU = ["experiment=cpu", "llm.max_new_tokens=32", "llm.batch_size=2"]


def compose(repo: Path, *overrides: str) -> None:
    run_cli(["python", "-m", "embedtune.compose", *CPU, *overrides], repo)


def set_documents(repo: Path, train: dict[str, list[str]], validation: dict[str, list[str]]):
    """Point params.yaml at pydoc topic documents (as a user would after `make params`)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    as_sources = lambda docs: [{"name": n, "pydoc_topics": t} for n, t in docs.items()]  # noqa: E731
    params["data"]["train"] = as_sources(train)
    params["data"]["validation"] = as_sources(validation)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def cached_answers(cache: Path) -> int:
    return sum(1 for _ in cache.rglob("*.json"))


def synth_metrics(repo: Path) -> dict:
    return json.loads((repo / "metrics/synth.json").read_text())


def chunk_count(repo: Path, split: str) -> int:
    return len((repo / f"data/chunks/{split}.jsonl").read_text().splitlines())


@pytest.fixture
def repo(tmp_path) -> Path:
    return copy_project(tmp_path / "repo")


def test_sigkill_then_repro_loses_nothing_and_repeats_nothing(repo):
    compose(repo, "synth.max_chunks=12")
    run_cli(["dvc", "repro", "chunk"], repo)
    env = cli_env(repo / "src")
    cache = Path(env["EMBEDTUNE_CACHE_DIR"]) / "synth"
    proc = subprocess.Popen(
        ["dvc", "repro", "synth"],
        cwd=repo,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while cached_answers(cache) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = cached_answers(cache)
    total = chunk_count(repo, "train") and 12 + min(12, chunk_count(repo, "validation"))
    assert 4 <= before < total, "the kill should land in the middle of generation"

    run_cli(["dvc", "repro", "synth"], repo)
    metrics = synth_metrics(repo)
    reused = sum(m["cached_answers"] for m in metrics.values())
    assert reused == before  # everything generated before the kill is used
    assert cached_answers(cache) == total  # and nothing was generated twice
    assert sum(m["chunks"] for m in metrics.values()) == total


def test_adding_a_document_generates_only_its_chunks(repo):
    compose(repo)
    first = {"simple.pdf": ["pass", "del", "assert"]}
    validation = {"lambda.pdf": ["lambda"]}
    set_documents(repo, first, validation)
    run_cli(["dvc", "repro", "synth"], repo)
    first_chunks = chunk_count(repo, "train")

    set_documents(repo, {**first, "loops.pdf": ["break", "continue"]}, validation)
    started = time.perf_counter()
    out = run_cli(["dvc", "repro", "synth"], repo).stdout
    assert "Running stage 'synth'" in out
    train = synth_metrics(repo)["train"]
    added = chunk_count(repo, "train") - first_chunks
    assert added > 0
    assert train["cached_answers"] == first_chunks
    assert train["chunks"] == first_chunks + added
    assert synth_metrics(repo)["validation"]["cached_answers"] == chunk_count(repo, "validation")
    print(f"incremental synth for {added} new chunks: {time.perf_counter() - started:.1f} s")
