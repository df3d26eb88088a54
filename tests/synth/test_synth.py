"""The `synth` stage end to end: its files, its answer cache (a cached run loads no LLM, asks
nothing and changes no byte; a damaged entry is asked again; an unwritable cache is refused before
the work), the failure gate; and crash safety with real dvc, the real LLM and a real SIGKILL.

The fast tests run the stage against a stub OpenAI-compatible server on 127.0.0.1 (the backend
and its client are real); the slow ones run `dvc repro` with SmolLM2-135M.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

import embedtune.synth.__main__ as synth
from embedtune.compose import compose
from embedtune.errors import EmbedtuneError
from embedtune.io import write_jsonl
from tests.helpers import ROOT, cli_env, copy_project, run_cli
from tests.helpers.openai_stub import Reply, completion, prompt_of, stub_server

CHUNKS = {
    "train": ["alpha", "bravo", "charlie", "delta"],
    "validation": ["echo", "foxtrot"],
}


def chunk_text(word: str) -> str:
    return f"The {word} statement does one thing in Python programs."


def answer(body: dict) -> Reply:
    """Two questions about the chunk's first word (stub LLM)."""
    word = re.search(r"The (\w+) statement", prompt_of(body)).group(1)
    text = f"1. What is {word} used for?\n2. When should {word} be avoided?\nHere you go."
    return Reply(body=completion(text, tokens=12))


@pytest.fixture
def stage(tmp_path, monkeypatch):
    """A working folder with chunks and a params.yaml for the openai backend; returns a function
    that points it at a server and runs the stage in this process."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("EMBEDTUNE_CACHE_DIR", str(tmp_path / "cache"))
    for split, words in CHUNKS.items():
        rows = [{"id": f"{split}-{i}", "text": chunk_text(w)} for i, w in enumerate(words)]
        write_jsonl(work / "data" / "chunks" / f"{split}.jsonl", rows)
    overrides = ["experiment=cpu", "llm=openai_server", "llm.max_retries=0", "llm.batch_size=2"]
    compose([*overrides, "synth.max_chunks=3"], ROOT / "conf", work / "params.yaml")

    def configure(base_url: str, **updates) -> None:
        params = yaml.safe_load((work / "params.yaml").read_text())
        params["llm"]["base_url"] = base_url
        for key, value in updates.items():
            section, name = key.split(".")
            params[section][name] = value
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def run(base_url: str, **updates) -> dict:
        configure(base_url, **updates)
        synth.main()
        return json.loads((work / "metrics" / "synth.json").read_text())

    run.work, run.configure, run.cache = work, configure, tmp_path / "cache" / "synth"
    return run


def synth_cli(work: Path, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`python -m embedtune.synth` in `work`, as a user runs it (after the command `prefix`)."""
    env = {
        "PYTHONPATH": str(ROOT / "src"),
        "EMBEDTUNE_CACHE_DIR": os.environ["EMBEDTUNE_CACHE_DIR"],
    }
    return run_cli([*prefix, sys.executable, "-m", "embedtune.synth"], work, check=False, env=env)


def qa_files(work: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((work / "data" / "qa").glob("*.json"))}


def outputs(work: Path) -> dict[str, bytes]:
    """Every file the stage writes, as bytes: what `dvc status` compares."""
    return {**qa_files(work), "synth.json": (work / "metrics" / "synth.json").read_bytes()}


def cache_entry(cache: Path, word: str) -> Path:
    """The cached answer to the question prompt of the chunk about `word`."""
    (path,) = [p for p in cache.rglob("*.json") if f"What is {word} used for?" in p.read_text()]
    return path


def posts(stub) -> int:
    return sum(method == "POST" for method, _, _ in stub.requests)


def test_stage_writes_the_dataset_metrics_and_failures(stage):
    with stub_server(lambda hit, body: answer(body)) as (stub, url):
        metrics = stage(url)
    work = stage.work
    assert sorted(qa_files(work)) == ["failures.json", "train.json", "validation.json"]
    train = json.loads((work / "data/qa/train.json").read_text())
    assert sorted(train["queries"].values()) == sorted(
        q
        for w in CHUNKS["train"][:3]
        for q in (f"What is {w} used for?", f"When should {w} be avoided?")
    )
    assert len(train["corpus"]) == 3  # synth.max_chunks
    assert metrics["train"] == {
        "chunks": 3,
        "questions": 6,
        "keyword_queries": 0,
        "coverage": 1.0,
        "failed_chunks": 0,
        "failures": {},
        "drops": {"not_a_question": 3},
        "judged": 0,
        "cached_answers": 0,
        "cache_damaged": 0,
        "retried_chunks": 0,
        "recovered_chunks": 0,
        "tokens_generated": 36,
        "tokens_per_s": metrics["train"]["tokens_per_s"],
    }
    assert metrics["train"]["tokens_per_s"] > 0
    assert metrics["validation"]["chunks"] == 2
    failures = json.loads((work / "data/qa/failures.json").read_text())
    assert failures == {"train": {}, "validation": {}}
    # The LLM was loaded once (one GET /models) for both splits; one request per chunk.
    assert [r for r in stub.requests if r[0] == "GET"] == [("GET", "/v1/models", None)]
    assert posts(stub) == 5


def answer_greedy_badly(body: dict) -> Reply:
    """Greedy answers talk about "the text" (dropped); sampled ones, with seed 43 only, ask a
    real question about the chunk's first word."""
    if body.get("temperature", 0) == 0:
        return Reply(body=completion("What does the text say?", tokens=5))
    word = re.search(r"The (\w+) statement", prompt_of(body)).group(1)
    good = body.get("seed") == 43 and body["temperature"] == 0.5
    text = f"How is {word} used?" if good else "What is this passage about?"
    return Reply(body=completion(text, tokens=4))


def test_a_chunk_without_a_question_is_asked_again_with_seeded_sampling(stage):
    with stub_server(lambda hit, body: answer_greedy_badly(body)) as (stub, url):
        metrics = stage(url, **{"synth.attempts": 3, "synth.retry_temperature": 0.5})
    train = json.loads((stage.work / "data/qa/train.json").read_text())
    assert sorted(train["queries"].values()) == sorted(
        f"How is {w} used?" for w in CHUNKS["train"][:3]
    )
    assert metrics["train"]["retried_chunks"] == 3
    assert metrics["train"]["recovered_chunks"] == 3
    assert metrics["train"]["failed_chunks"] == 0
    # 5 greedy answers, 5 retries with seed 43 (all recovered): no third attempt.
    seeds = [body.get("seed") for body in stub.bodies]
    assert sorted(seeds, key=str) == sorted([None] * 5 + [43] * 5, key=str)
    # The retries are cached too: a second run asks nothing and writes the same files.
    first = qa_files(stage.work)
    with stub_server(lambda hit, body: answer_greedy_badly(body)) as (again, url):
        stage(url)
    assert posts(again) == 0 and qa_files(stage.work) == first


def test_retries_that_find_nothing_leave_the_chunk_failed(stage):
    never = lambda hit, body: Reply(body=completion("What does the text say?"))  # noqa: E731
    with stub_server(never) as (stub, url):
        with pytest.raises(EmbedtuneError, match="3 of 3 chunks failed"):
            stage(url, **{"synth.attempts": 3, "synth.max_failure_rate": 0.5})
        assert posts(stub) == 3 * 3  # each training chunk asked three times; the gate stopped
        metrics = stage(url, **{"synth.max_failure_rate": 1.0})
    assert posts(stub) == 9 + 2 * 3  # the training answers came from the cache
    assert metrics["train"]["retried_chunks"] == 3 and metrics["train"]["recovered_chunks"] == 0
    assert metrics["train"]["failures"] == {"no_valid_question": 3}


def test_a_cached_run_loads_no_llm_and_changes_nothing(stage, capsys):
    with stub_server(lambda hit, body: answer(body)) as (stub, url):
        stage(url)
    first = outputs(stage.work)
    assert json.loads(first["synth.json"])["train"]["tokens_per_s"] > 0
    capsys.readouterr()
    # The server is gone: a fully cached run must not even look for it.
    stage(url)
    assert "train          3 chunks (3 cached) ->" in capsys.readouterr().out
    # Byte-identical, metrics/synth.json included (a cached run once rewrote its tokens/s and
    # cache hits, so `dvc status` flagged synth): they stay those of the run that generated.
    assert outputs(stage.work) == first
    # Speed-only settings keep the cache; one more chunk costs one request.
    with stub_server(lambda hit, body: answer(body)) as (stub, url):
        metrics = stage(url, **{"llm.concurrency": 1, "llm.batch_size": 7, "synth.max_chunks": 4})
    assert posts(stub) == 1
    assert metrics["train"]["cached_answers"] == 3 and metrics["train"]["chunks"] == 4


def test_a_changed_prompt_or_model_asks_again(stage):
    with stub_server(lambda hit, body: answer(body)) as (stub, url):
        stage(url)
        prompt = "Text: {context}\n\nAsk {num_questions} questions, one per line."
        metrics = stage(url, **{"synth.prompt": prompt})
        assert posts(stub) == 10
        assert metrics["train"]["cached_answers"] == 0
        metrics = stage(url, **{"llm.model": "another-model"})
        assert posts(stub) == 15
        assert metrics["validation"]["cached_answers"] == 0


KEYWORD_PROMPT = "Keywords ({num_questions}) for: {context}"
JUDGE = {"prompt": "Judge: {question}\nAgainst: {context}", "min_score": 5}


def answer_all_prompts(body: dict) -> Reply:
    """Questions as `answer`; keyword queries (one too short, one repeating a question); the
    judge: "avoided" questions score 2, alpha's keyword query gets no number, the rest 8."""
    prompt = prompt_of(body)
    word = re.search(r"The (\w+) statement", prompt).group(1)
    if prompt.startswith("Keywords (2) for: "):
        text = f"{word} statement usage\n{word}\nwhat is {word} used for?"
        return Reply(body=completion(text, tokens=7))
    if prompt.startswith("Judge: "):
        query = prompt.splitlines()[0].removeprefix("Judge: ")
        score = "2" if "avoided" in query else "8"
        if query == "alpha statement usage":
            score = "It depends."
        return Reply(body=completion(score, tokens=1))
    return answer(body)


def test_keyword_queries_and_the_judge_are_asked_counted_and_cached(stage):
    settings = {
        "synth.keyword_queries": 2,
        "synth.keyword_prompt": KEYWORD_PROMPT,
        "synth.judge": JUDGE,
    }
    with stub_server(lambda hit, body: answer_all_prompts(body)) as (stub, url):
        metrics = stage(url, **settings)
    # Per chunk: one question prompt, one keyword prompt, three queries judged.
    assert posts(stub) == 5 * (1 + 1 + 3)
    train = json.loads((stage.work / "data/qa/train.json").read_text())
    assert sorted(train["queries"].values()) == sorted(
        [f"What is {w} used for?" for w in CHUNKS["train"][:3]]
        + [f"{w} statement usage" for w in ("bravo", "charlie")]
    )
    judged = [prompt_of(b) for b in stub.bodies if prompt_of(b).startswith("Judge: ")]
    assert f"Judge: bravo statement usage\nAgainst: {chunk_text('bravo')}" in judged
    assert metrics["train"] | {"tokens_per_s": 0} == {
        "chunks": 3,
        "questions": 5,
        "keyword_queries": 2,
        "coverage": 1.0,
        "failed_chunks": 0,
        "failures": {},
        "drops": {
            "judge_low": 3,
            "judge_unparsed": 1,
            "keyword_duplicate_in_chunk": 3,
            "keyword_too_short": 3,
            "not_a_question": 3,
        },
        "judged": 9,
        "cached_answers": 0,
        "cache_damaged": 0,
        "retried_chunks": 0,
        "recovered_chunks": 0,
        "tokens_generated": 3 * (12 + 7 + 3),
        "tokens_per_s": 0,
    }
    # A rerun asks nothing: keyword and judge answers come from the same cache.
    first = outputs(stage.work)
    with stub_server(lambda hit, body: answer_all_prompts(body)) as (again, url):
        stage(url)
    assert posts(again) == 0 and outputs(stage.work) == first
    # Off again: no more requests (the questions are cached), only the questions are kept.
    with stub_server(lambda hit, body: answer_all_prompts(body)) as (stub, url):
        metrics = stage(url, **{"synth.keyword_queries": 0, "synth.judge": None})
    assert posts(stub) == 0
    assert (metrics["train"]["questions"], metrics["train"]["judged"]) == (6, 0)
    # Nothing generated, but other figures: those of this run, all its answers cached.
    assert (metrics["train"]["cached_answers"], metrics["train"]["tokens_per_s"]) == (3, 0.0)


def test_a_refused_chunk_is_recorded_and_retried_next_run(stage):
    def refuse_bravo(hit, body):
        if "The bravo statement" in prompt_of(body):
            return Reply(400, {"error": {"message": "prompt too long"}})
        return answer(body)

    with stub_server(refuse_bravo) as (stub, url):
        metrics = stage(url, **{"synth.max_failure_rate": 0.5})
    bravo = "train-1"
    failures = json.loads((stage.work / "data/qa/failures.json").read_text())
    assert failures["train"] == {bravo: "generation_error: HTTP 400 (prompt too long)"}
    assert metrics["train"]["failures"] == {"generation_error": 1}
    train = json.loads((stage.work / "data/qa/train.json").read_text())
    assert bravo in train["corpus"] and len(train["queries"]) == 4

    with stub_server(lambda hit, body: answer(body)) as (stub, url):
        metrics = stage(url)
    assert posts(stub) == 1  # only the refused chunk: a failure is never cached
    assert metrics["train"]["failed_chunks"] == 0


def test_too_many_failed_chunks_stop_the_stage_with_one_line(stage):
    refuse = lambda hit, body: Reply(400, {"error": {"message": "no"}})  # noqa: E731
    with stub_server(refuse) as (stub, url):
        with pytest.raises(EmbedtuneError, match=r"synth train: 3 of 3 chunks failed"):
            stage(url)
        assert not (stage.work / "data/qa/train.json").exists()
        # The same through the command line: exit 2, one line, no traceback.
        proc = synth_cli(stage.work)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "embedtune synth: error: synth train: 3 of 3 chunks failed (100% > "
        "synth.max_failure_rate=0.2); first reason: generation_error: HTTP 400 (no)"
    )
    assert "Traceback" not in proc.stderr


def test_an_unreachable_server_fails_before_anything_is_written(stage):
    with pytest.raises(EmbedtuneError, match="no server answers"):
        stage("http://127.0.0.1:9/v1")
    assert not (stage.work / "data" / "qa").exists()


# --- a damaged or unwritable answer cache (faults a robustness probe found) ---------------------


def test_a_cache_entry_of_the_wrong_types_is_asked_again_and_replaced(stage):
    with stub_server(lambda hit, body: answer(body)) as (stub, url):
        stage(url)
    first = qa_files(stage.work)
    entry = cache_entry(stage.cache, "alpha")
    entry.write_text('{"text": 12345, "new_tokens": 12}')  # what the probe found: AttributeError
    with stub_server(lambda hit, body: answer(body)) as (stub, url):
        metrics = stage(url)
    assert posts(stub) == 1  # only the damaged answer
    assert (metrics["train"]["cache_damaged"], metrics["train"]["cached_answers"]) == (1, 2)
    assert metrics["validation"]["cache_damaged"] == 0
    assert qa_files(stage.work) == first
    assert json.loads(entry.read_text())["text"].startswith("1. What is alpha used for?")


def test_an_empty_folder_in_place_of_a_cache_entry_is_asked_again_and_replaced(stage):
    with stub_server(lambda hit, body: answer(body)) as (stub, url):
        stage(url)
    entry = cache_entry(stage.cache, "bravo")
    entry.unlink()
    entry.mkdir()
    with stub_server(lambda hit, body: answer(body)) as (stub, url):
        metrics = stage(url)
    assert posts(stub) == 1 and metrics["train"]["cache_damaged"] == 1
    assert "What is bravo used for?" in entry.read_text()


def test_a_folder_of_files_in_place_of_a_cache_entry_stops_with_one_line(stage):
    with stub_server(lambda hit, body: answer(body)) as (stub, url):
        stage(url)
    before = outputs(stage.work)
    entry = cache_entry(stage.cache, "bravo")
    entry.unlink()
    (entry / "kept").mkdir(parents=True)
    with stub_server(lambda hit, body: answer(body)) as (stub, url):
        stage.configure(url)
        proc = synth_cli(stage.work)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"embedtune synth: error: {entry} is a folder with files in it where the answer cache "
        "keeps one answer file: move that folder out of the cache and run again"
    )
    assert stub.requests == []  # refused before the work: no model even looked for
    assert outputs(stage.work) == before and (entry / "kept").is_dir()


@contextmanager
def read_only(folder: Path) -> Iterator[tuple[str, ...]]:
    """A command prefix under which `folder` really cannot be written. Permission bits do not
    stop root, so for root it is a read-only bind mount in a private mount namespace (the probe's
    read-only file system); for anyone else, the folders' write bits are cleared meanwhile."""
    if os.geteuid() != 0:
        folders = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
        for path in folders:
            path.chmod(0o555)
        try:
            yield ()
        finally:
            for path in folders:
                path.chmod(0o755)
        return
    mount = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    prefix = ("unshare", "--mount", "sh", "-c", mount, str(folder))
    if not shutil.which("unshare") or subprocess.run([*prefix, "true"]).returncode != 0:
        pytest.skip("root without mount namespaces here: no way to make a folder read-only")
    yield prefix


def test_a_read_only_cache_serves_a_cached_run_and_is_refused_before_new_work(stage):
    with stub_server(lambda hit, body: answer(body)) as (stub, url):
        stage(url)
    first, entries = outputs(stage.work), sorted(stage.cache.rglob("*"))
    with read_only(stage.cache) as prefix:
        cached = synth_cli(stage.work, prefix)  # every answer cached: reading is enough
        assert cached.returncode == 0, cached.stderr
        assert outputs(stage.work) == first
        with stub_server(lambda hit, body: answer(body)) as (stub, url):
            stage.configure(url, **{"synth.max_chunks": 4})  # one chunk more, not cached
            proc = synth_cli(stage.work, prefix)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    cache = re.escape(str(stage.cache))
    assert re.fullmatch(
        rf"embedtune synth: error: the answer cache cannot be written \({cache}/[0-9a-f]{{2}}: "
        r"(Read-only file system|Permission denied)\) and lacks 1 answer: make "
        rf"{cache} writable, or set EMBEDTUNE_CACHE_DIR to a writable folder",
        proc.stderr.strip().splitlines()[-1],
    )
    assert stub.requests == []  # refused before the model was looked for
    assert outputs(stage.work) == first and sorted(stage.cache.rglob("*")) == entries


# --- real dvc, real LLM, real SIGKILL (slow) -----------------------------------------------------

CPU = ["experiment=cpu", "llm.max_new_tokens=32", "llm.batch_size=2"]


def compose_in(repo: Path, *overrides: str) -> None:
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


MAX_CHUNKS = 4  # per split: 2 batches of 2 each; the kill lands once 4 answers are cached


@pytest.mark.slow
def test_sigkill_then_repro_loses_nothing_and_repeats_nothing(repo):
    compose_in(repo, f"synth.max_chunks={MAX_CHUNKS}")
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
    total = sum(min(MAX_CHUNKS, chunk_count(repo, split)) for split in ("train", "validation"))
    assert 4 <= before < total, "the kill should land in the middle of generation"

    run_cli(["dvc", "repro", "synth"], repo)
    metrics = synth_metrics(repo)
    reused = sum(m["cached_answers"] for m in metrics.values())
    assert reused == before  # everything generated before the kill is used
    assert cached_answers(cache) == total  # and nothing was generated twice
    assert sum(m["chunks"] for m in metrics.values()) == total


@pytest.mark.slow
def test_adding_a_document_generates_only_its_chunks(repo):
    # What is generated is the subject, not how many chunks get a question: with 32 new tokens
    # SmolLM2 answers one of simple.pdf's three chunks with "Python:" lines only.
    compose_in(repo, "synth.max_failure_rate=1.0")
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
    # The same stage run by hand, every answer cached, leaves dvc nothing to redo.
    run_cli(["python", "-m", "embedtune.synth"], repo)
    assert "up to date" in run_cli(["dvc", "status", "synth"], repo).stdout
