"""The answer cache's key, the cache itself (a damaged entry is a counted miss, an unwritable
cache is refused before any generation), and `answer_all`: longest prompts first, results in
input order, cached per finished batch, failing per batch; `halve_on_oom`."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from embedtune.config import parse_section
from embedtune.errors import EmbedtuneError
from embedtune.synth.llm.answers import (
    AnswerCache,
    answer_all,
    answer_key,
    default_cache_dir,
    halve_on_oom,
)
from embedtune.synth.llm.base import BACKENDS, Failure, Generation, LLMConfig, backend_config
from tests.helpers import ROOT, cfg

# --- answer_key ---------------------------------------------------------------------------------


def shipped_configs() -> list[LLMConfig]:
    """One config per conf/llm/*.yaml: every backend that can be selected."""
    paths = sorted((ROOT / "conf" / "llm").glob("*.yaml"))
    return [parse_section("llm", yaml.safe_load(p.read_text()), backend_config) for p in paths]


def other_value(value):
    """Some different value of the same kind (validation is not needed to compute a key)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "-other"
    if value is None:
        return "set"
    raise AssertionError(f"no other value for {value!r}: extend other_value")


@pytest.mark.parametrize("llm", shipped_configs(), ids=lambda c: f"{c.backend}-{c.model}")
def test_every_key_but_the_speed_only_ones_changes_the_answer_key(llm):
    """The guard that a backend cannot serve stale answers: a config key that could change an
    answer (every key, unless the backend lists it in `not_in_answer_key`) changes the key."""
    fields = set(type(llm).model_fields)
    assert llm.not_in_answer_key <= fields  # no exclusion names a key that does not exist
    key = answer_key(llm, 0, "p")
    for name in sorted(fields):
        changed = llm.model_copy(update={name: other_value(getattr(llm, name))})
        if name in llm.not_in_answer_key:
            assert answer_key(changed, 0, "p") == key, f"llm.{name} is speed-only"
        else:
            assert answer_key(changed, 0, "p") != key, f"llm.{name} shapes the answer"


def test_the_speed_only_keys_of_each_backend():
    excluded = {c.backend: set(c.not_in_answer_key) for c in shipped_configs()}
    assert excluded == {
        "transformers": {"batch_size", "device", "kv_cache", "compile"},
        "openai": {
            "batch_size",
            "base_url",
            "api_key_env",
            "concurrency",
            "timeout_s",
            "max_retries",
        },
    }
    assert set(excluded) == set(BACKENDS.names())


def test_answer_key_seed_and_prompt():
    greedy = cfg("llm")
    key = answer_key(greedy, 0, "p")
    assert len(key) == 64 and int(key, 16) >= 0
    assert answer_key(greedy, 0, "p") == key  # deterministic
    assert answer_key(greedy, 1, "p") == key  # greedy: the seed changes nothing
    assert answer_key(greedy, 0, "p ") != key  # the full prompt, to the last character
    sampled = cfg("llm", temperature=0.7)
    assert answer_key(sampled, 0, "p") != answer_key(sampled, 1, "p")
    # The same model name behind another backend is another answer.
    remote = cfg("llm", "llm=openai_server", model=greedy.model, temperature=0.0)
    assert answer_key(remote, 0, "p") != key


# --- AnswerCache --------------------------------------------------------------------------------


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBEDTUNE_CACHE_DIR", str(tmp_path / "shared"))
    assert default_cache_dir() == tmp_path / "shared" / "synth"
    monkeypatch.delenv("EMBEDTUNE_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "embedtune" / "synth"


def test_cache_round_trip_and_layout(tmp_path):
    cache = AnswerCache(tmp_path)
    key = answer_key(cfg("llm"), 0, "p")
    assert cache.get(key) is None
    assert cache.damaged == 0  # not there is a plain miss
    cache.put(key, Generation("Why?", 2))
    assert cache.get(key) == Generation("Why?", 2)
    path = tmp_path / key[:2] / f"{key}.json"
    assert json.loads(path.read_text()) == {"text": "Why?", "new_tokens": 2}
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [path.name]  # no temp files
    assert AnswerCache(tmp_path).get(key) == Generation("Why?", 2)  # another process sees it
    cache.put(key, Generation("How?", 3))
    assert cache.get(key) == Generation("How?", 3)


DAMAGED = [
    b"",
    b'{"text": "Why',
    b'{"text": "Why?"}',
    b"[1, 2]",
    b"null",
    b'{"text": 12345, "new_tokens": 2}',  # valid JSON, wrong types: was an AttributeError
    b'{"text": "Why?", "new_tokens": "2"}',
    b'{"text": "Why?", "new_tokens": true}',
    b'{"text": "Why?", "new_tokens": -1}',
    b'{"text": "Why?", "new_tokens": 2, "seed": 0}',
    b'{"text": "\xff not UTF-8", "new_tokens": 2}',
]


def cache_file(folder, prompt: str):
    key = _key(prompt)
    return folder / key[:2] / f"{key}.json"


def answer_why(batch: list[str]) -> list[Generation]:
    return [Generation("Why?", 1) for _ in batch]


@pytest.mark.parametrize("content", DAMAGED)
def test_a_damaged_cache_file_is_a_counted_miss_and_is_replaced(tmp_path, content):
    path = cache_file(tmp_path, "p")
    path.parent.mkdir()
    path.write_bytes(content)
    cache = AnswerCache(tmp_path)
    results, reused = answer_all(["p"], answer_why, 1, _key, cache)
    assert (results, reused, cache.damaged) == ([Generation("Why?", 1)], 0, 1)
    # Replaced through a temporary file and a rename: a valid entry, nothing else left beside it.
    assert json.loads(path.read_text()) == {"text": "Why?", "new_tokens": 1}
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert AnswerCache(tmp_path).get(_key("p")) == Generation("Why?", 1)


def test_an_empty_folder_in_place_of_an_answer_is_damaged_and_replaced(tmp_path):
    path = cache_file(tmp_path, "p")
    path.mkdir(parents=True)
    cache = AnswerCache(tmp_path)
    results, reused = answer_all(["p"], answer_why, 1, _key, cache)
    assert (results, reused, cache.damaged) == ([Generation("Why?", 1)], 0, 1)
    assert json.loads(path.read_text()) == {"text": "Why?", "new_tokens": 1}


def test_a_folder_with_files_in_place_of_an_answer_is_one_line_before_any_work(tmp_path):
    path = cache_file(tmp_path, "p")
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("someone's")
    message = (
        f"{path} is a folder with files in it where the answer cache keeps one answer file: "
        "move that folder out of the cache and run again"
    )
    with pytest.raises(EmbedtuneError, match=f"^{re.escape(message)}$"):
        answer_all(["p"], pytest.fail, 1, _key, AnswerCache(tmp_path), prepare=pytest.fail)
    assert (path / "notes.txt").read_text() == "someone's"  # nothing removed


def test_an_unwritable_cache_is_refused_before_the_model_loads(tmp_path):
    """Read-only for real, whoever runs the test: the cache folder lies under a file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cache = AnswerCache(blocker / "synth")
    bucket = cache_file(cache.folder, "p").parent
    message = (
        f"the answer cache cannot be written ({bucket}: Not a directory) and lacks 1 answer: "
        f"make {cache.folder} writable, or set EMBEDTUNE_CACHE_DIR to a writable folder"
    )
    with pytest.raises(EmbedtuneError, match=f"^{re.escape(message)}$"):
        answer_all(["p"], pytest.fail, 1, _key, cache, prepare=pytest.fail)


def test_a_cache_file_that_cannot_be_written_is_one_line(tmp_path):
    """What the check before the work cannot foresee (a full disk, a folder made since)."""
    path = cache_file(tmp_path, "p")
    path.mkdir(parents=True)
    (path / "made-since").write_text("")  # after `get` found it empty
    with pytest.raises(EmbedtuneError, match=f"^cannot write the answer cache file {path} "):
        AnswerCache(tmp_path).put(_key("p"), Generation("Why?", 1))
    assert (path / "made-since").exists()


# --- answer_all ---------------------------------------------------------------------------------


def _key(prompt: str) -> str:
    return answer_key(cfg("llm"), 0, prompt)


def test_answer_all_order_and_batches():
    messages = ["bb", "a", "dddd", "ccc", "ee", "f", "gggggg"]
    calls: list[list[str]] = []
    progress: list[int] = []

    def generate(batch: list[str]) -> list[Generation]:
        calls.append(list(batch))
        return [Generation(m.upper(), len(m)) for m in batch]

    results, reused = answer_all(
        messages, generate, 3, _key, None, lambda a: progress.append(len(a))
    )
    assert [g.text for g in results] == [m.upper() for m in messages]
    assert reused == 0
    # Longest first; equal lengths keep input order ("bb" before "ee", "a" before "f").
    assert calls == [["gggggg", "dddd", "ccc"], ["bb", "ee", "a"], ["f"]]
    assert progress == [3, 3, 1]


def test_answer_all_reuses_cache_and_retries_failed_batches(tmp_path):
    cache = AnswerCache(tmp_path)
    calls: list[list[str]] = []

    def flaky(batch: list[str]) -> list[Generation]:
        calls.append(list(batch))
        if "boom" in batch:
            raise RuntimeError("out of luck\nsecond line")
        return [Generation(m + "?", 1) for m in batch]

    prompts = ["one", "two", "boom", "four"]
    results, reused = answer_all(prompts, flaky, 1, _key, cache)
    assert reused == 0
    assert results[2] == Failure("generation_error: RuntimeError: out of luck")
    assert [r.text for i, r in enumerate(results) if i != 2] == ["one?", "two?", "four?"]

    calls.clear()
    again, reused = answer_all(prompts, flaky, 4, _key, cache)
    assert reused == 3
    assert calls == [["boom"]]  # only the failed prompt is generated again
    assert [a.text for i, a in enumerate(again) if i != 2] == ["one?", "two?", "four?"]


def test_a_failed_batch_fails_every_prompt_in_it_with_one_short_line():
    def broken(batch: list[str]) -> list[Generation]:
        raise EmbedtuneError("http://x/v1: failed after 3 attempts: HTTP 503 " + "x" * 300)

    results, _ = answer_all(["a", "b", "c"], broken, 2, _key)
    assert len(results) == 3 and all(isinstance(r, Failure) for r in results)
    assert results[0].reason.startswith("generation_error: EmbedtuneError: http://x/v1: failed")
    assert len(results[0].reason) == 200


def test_a_failure_the_backend_returns_is_kept_but_not_cached(tmp_path):
    cache = AnswerCache(tmp_path)
    calls: list[list[str]] = []

    def refuses_long(batch: list[str]) -> list[Generation | Failure]:
        calls.append(list(batch))
        return [
            Failure("generation_error: HTTP 400") if len(m) > 3 else Generation(m, 1) for m in batch
        ]

    results, _ = answer_all(["ab", "long one", "cd"], refuses_long, 8, _key, cache)
    assert results == [
        Generation("ab", 1),
        Failure("generation_error: HTTP 400"),
        Generation("cd", 1),
    ]
    calls.clear()
    again, reused = answer_all(["ab", "long one", "cd"], refuses_long, 8, _key, cache)
    assert (again, reused) == (results, 2)
    assert calls == [["long one"]]


def test_prepare_runs_only_when_something_is_not_cached(tmp_path):
    cache = AnswerCache(tmp_path)
    cache.put(_key("cached"), Generation("Why?", 1))
    prepared: list[bool] = []

    def refuse() -> None:
        raise EmbedtuneError("llm.quantization=4bit needs a CUDA GPU")

    results, reused = answer_all(["cached"], pytest.fail, 2, _key, cache, prepare=refuse)
    assert (results, reused) == ([Generation("Why?", 1)], 1)
    with pytest.raises(EmbedtuneError, match="needs a CUDA GPU"):
        answer_all(["cached", "new"], pytest.fail, 2, _key, cache, prepare=refuse)

    def generate(batch: list[str]) -> list[Generation]:
        assert prepared == [True]  # before the first generation, once
        return [Generation("x?", 1) for _ in batch]

    prompts = ["cached", "n1", "n2", "n3"]
    results, reused = answer_all(
        prompts, generate, 1, _key, cache, prepare=lambda: prepared.append(True)
    )
    assert reused == 1 and prepared == [True]


def test_answer_all_empty():
    assert answer_all([], lambda batch: pytest.fail("no call expected"), 4, _key) == ([], 0)


def test_a_cache_in_another_folder_shares_nothing(tmp_path):
    answer_all(["a"], lambda batch: [Generation("x", 1)], 1, _key, AnswerCache(tmp_path / "one"))
    _, reused = answer_all(
        ["a"], lambda batch: [Generation("x", 1)], 1, _key, AnswerCache(tmp_path / "two")
    )
    assert reused == 0


# --- halve_on_oom -------------------------------------------------------------------------------


def test_out_of_memory_halves_the_batch():
    sizes: list[int] = []

    def small_gpu(batch: list[str]) -> list[Generation]:
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return [Generation(p + "?", 1) for p in batch]

    answers = halve_on_oom(small_gpu)(["a", "b", "c", "d", "e"])
    assert [a.text for a in answers] == ["a?", "b?", "c?", "d?", "e?"]
    assert sizes == [5, 2, 3, 1, 2]


def test_out_of_memory_on_one_prompt_is_raised_and_other_errors_pass_through():
    def no_gpu(batch: list[str]) -> list[Generation]:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        halve_on_oom(no_gpu)(["a", "b"])
    # Through answer_all the batch then fails (recorded per prompt) instead of the stage.
    results, _ = answer_all(["a", "b"], halve_on_oom(no_gpu), 2, _key)
    assert results == [Failure("generation_error: OutOfMemoryError: CUDA out of memory")] * 2

    calls: list[int] = []

    def broken(batch: list[str]) -> list[Generation]:
        calls.append(len(batch))
        raise RuntimeError("not memory")

    with pytest.raises(RuntimeError, match="not memory"):
        halve_on_oom(broken)(["a", "b", "c"])
    assert calls == [3]  # not split
