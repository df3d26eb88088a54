"""From one LLM answer per chunk to a QA dataset: prompts, content-derived ids, counts of what
was dropped, the failure-rate gate, and the LlamaIndex layout."""

from __future__ import annotations

import re

import pytest
from llama_index.finetuning import EmbeddingQAFinetuneDataset

from embedtune.errors import EmbedtuneError
from embedtune.io import write_json
from embedtune.llm.base import Failure, Generation
from embedtune.qa import (
    SynthStats,
    build_prompt,
    check_failure_rate,
    has_question,
    query_id,
    resolve_prompt,
    synthesize,
)
from tests.conftest import cfg
from tests.test_questions import CLEAN, NO_QUESTION, REPEATED

CFG = cfg("synth", num_questions=2, prompt="Text: {context}\nWrite {num_questions} questions.")

CHUNKS = [
    {"id": "a" * 16, "text": "The for statement iterates over a sequence."},
    {"id": "b" * 16, "text": "The with statement wraps a block."},
    {"id": "c" * 16, "text": "The try statement handles exceptions."},
    {"id": "d" * 16, "text": "The while statement loops while true."},
]
ANSWERS = {
    "a" * 16: Generation(CLEAN, 20),
    "b" * 16: Generation(NO_QUESTION, 12),
    "c" * 16: Generation(REPEATED, 18),
    # The first question repeats one already asked about chunk a (case differs).
    "d" * 16: Generation('1. WHAT is the "for" statement?\n2. When does a while loop stop?', 15),
}


def test_build_prompt():
    assert build_prompt(CFG.prompt, "some text", 2) == "Text: some text\nWrite 2 questions."
    # Braces in the chunk text are text, not placeholders.
    assert build_prompt(CFG.prompt, "d = {key}", 1) == "Text: d = {key}\nWrite 1 questions."


def test_the_shipped_prompt_builds():
    prompt = build_prompt(cfg("synth").prompt, "A set holds unique items.", 2)
    assert prompt.startswith("Text: A set holds unique items.\n\nWrite 2 different questions")


def test_reference_prompt_is_llamaindex_template():
    template = resolve_prompt("llamaindex")
    assert "{context}" in template and "{num_questions}" in template
    assert "{context_str}" not in template
    assert resolve_prompt("Text: {context}") == "Text: {context}"
    reference = cfg("synth", "synth=reference")
    assert reference.prompt == "llamaindex"
    assert "some text" in build_prompt(resolve_prompt(reference.prompt), "some text", 2)


@pytest.fixture(scope="module")
def synthesized() -> tuple[dict, SynthStats]:
    return synthesize(CHUNKS, [ANSWERS[c["id"]] for c in CHUNKS], CFG)


def test_synthesize_dataset(synthesized):
    dataset, _ = synthesized
    assert set(dataset) == {"queries", "corpus", "relevant_docs", "mode"}
    assert dataset["mode"] == "text"
    assert dataset["corpus"] == {c["id"]: c["text"] for c in CHUNKS}
    questions = {dataset["queries"][q]: dataset["relevant_docs"][q] for q in dataset["queries"]}
    assert questions == {
        'What is the "for" statement?': ["a" * 16],
        'How does the "for" statement iterate over a sequence?': ["a" * 16],
        'What is the "try" statement?': ["c" * 16],
        "When does a while loop stop?": ["d" * 16],
    }
    assert set(dataset["relevant_docs"]) == set(dataset["queries"])


def test_synthesize_stats(synthesized):
    _, stats = synthesized
    d = stats.as_dict()
    assert (d["chunks"], d["questions"], d["failed_chunks"]) == (4, 4, 1)
    assert d["failures"] == {"no_valid_question": 1}
    assert stats.failures == {"b" * 16: "no_valid_question"}
    assert d["tokens_generated"] == 20 + 12 + 18 + 15
    assert d["drops"] == {"duplicate_in_split": 1, "duplicate_in_chunk": 1, "not_a_question": 2}
    assert list(d["drops"]) == sorted(d["drops"])  # stable metrics files


def test_stats_rate_counts_only_fresh_tokens():
    stats = SynthStats(chunks=2, tokens_generated=100, fresh_tokens=30, seconds=2.0)
    assert stats.as_dict()["tokens_per_s"] == 15.0
    assert SynthStats().as_dict()["tokens_per_s"] == 0.0  # all cached: no time spent


def test_near_duplicates_across_chunks_are_dropped():
    chunks = CHUNKS[:2]
    answers = [
        Generation("What does the for statement do?", 5),
        Generation("What does the for statement do exactly?", 6),
    ]
    dataset, stats = synthesize(chunks, answers, CFG)
    assert list(dataset["queries"].values()) == ["What does the for statement do?"]
    assert stats.drops == {"near_duplicate_in_split": 1}
    assert stats.failures == {"b" * 16: "no_valid_question"}


def test_query_ids_are_stable_and_content_derived(synthesized):
    dataset, _ = synthesized
    again, _ = synthesize(CHUNKS, [ANSWERS[c["id"]] for c in CHUNKS], CFG)
    assert again == dataset
    for qid, question in dataset["queries"].items():
        assert re.fullmatch(r"[0-9a-f]{16}", qid)
        assert qid == query_id(dataset["relevant_docs"][qid][0], question)
    assert query_id("a" * 16, "What?") != query_id("b" * 16, "What?")
    assert query_id("a" * 16, "What?") != query_id("a" * 16, "Why?")
    # Pinned: ids name questions in data/qa and in tracked runs across versions.
    assert query_id("a" * 16, "What?") == "8335c40dcc910cdc"


@pytest.mark.filterwarnings("ignore:llama-index-finetuning is deprecated:DeprecationWarning")
def test_dataset_loads_with_llama_index(synthesized, tmp_path):
    dataset, _ = synthesized
    path = tmp_path / "qa" / "train.json"
    write_json(path, dataset)
    loaded = EmbeddingQAFinetuneDataset.from_json(str(path))
    assert loaded.queries == dataset["queries"]
    assert loaded.corpus == dataset["corpus"]
    assert loaded.relevant_docs == dataset["relevant_docs"]
    assert loaded.mode == "text"


def test_synthesize_rejects_wrong_number_of_answers():
    with pytest.raises(ValueError):
        synthesize(CHUNKS, [ANSWERS[c["id"]] for c in CHUNKS][:-1], CFG)


def test_generation_failures_are_recorded_not_fatal():
    answers = [Failure("generation_error: RuntimeError: boom")] + [
        ANSWERS[c["id"]] for c in CHUNKS[1:]
    ]
    dataset, stats = synthesize(CHUNKS, answers, CFG)
    assert stats.failures["a" * 16] == "generation_error: RuntimeError: boom"
    assert stats.as_dict()["failures"] == {"generation_error": 1, "no_valid_question": 1}
    assert "a" * 16 not in {d[0] for d in dataset["relevant_docs"].values()}
    assert "a" * 16 in dataset["corpus"]  # still a candidate (a distractor) for retrieval
    # With chunk a failed, chunk d's first question is no longer a duplicate.
    assert 'WHAT is the "for" statement?' in dataset["queries"].values()


def test_failure_rate_over_limit_stops_with_one_line():
    stats = SynthStats(chunks=10, failures={f"{i:016x}": "no_valid_question" for i in range(3)})
    check_failure_rate("train", stats, cfg("synth", max_failure_rate=0.3))
    with pytest.raises(EmbedtuneError, match=r"synth train: 3 of 10 chunks failed .*0.2") as err:
        check_failure_rate("train", stats, cfg("synth", max_failure_rate=0.2))
    assert str(err.value).endswith("first reason: no_valid_question")
    assert "\n" not in str(err.value)
    check_failure_rate("train", SynthStats(), cfg("synth", max_failure_rate=0.0))  # no chunks


def test_has_question_only_for_a_usable_question_about_the_chunk():
    synth = cfg("synth")
    chunk = {"id": "c", "text": "The for statement repeats its body."}
    assert has_question(Generation("1. How does for repeat its body?", 9), chunk, synth)
    assert not has_question(Generation("What does the passage say about it?", 7), chunk, synth)
    assert not has_question(Generation("The for statement repeats its body.", 7), chunk, synth)
    assert not has_question(Failure("generation_error: HTTP 400"), chunk, synth)
