"""From one LLM answer per chunk to a QA dataset: prompts, content-derived ids, counts of what
was dropped, the failure-rate gate, and the LlamaIndex layout."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from llama_index.finetuning import EmbeddingQAFinetuneDataset

from embedtune.errors import EmbedtuneError
from embedtune.io import write_json
from embedtune.synth.llm.base import Failure, Generation
from embedtune.synth.qa import (
    SynthStats,
    build_judge_prompt,
    build_prompt,
    check_failure_rate,
    has_question,
    judge_targets,
    query_id,
    resolve_prompt,
    synthesize,
)
from embedtune.synth.questions import parse_questions
from tests.helpers import cfg
from tests.helpers.synth import CLEAN, NO_QUESTION, REPEATED, sharing

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
    assert prompt.startswith("A set holds unique items.\n\nWrite 2 different questions")
    # A small model echoes the prompt's name for its input ("What is the text about?").
    assert not re.search(r"\b(text|passage|article|author)\b", cfg("synth").prompt, re.I)
    keyword_prompt = build_prompt(cfg("synth").keyword_prompt, "A set holds unique items.", 3)
    assert keyword_prompt.startswith("A set holds unique items.\n\nList 3 key topics")


def test_build_judge_prompt():
    template = "Context: {context}\nQuery: {question}\nScore 1-10."
    assert build_judge_prompt(template, "d = {key}", "What is {key}?") == (
        "Context: d = {key}\nQuery: What is {key}?\nScore 1-10."
    )


def test_reference_prompt_is_llamaindex_template():
    template = resolve_prompt("llamaindex")
    assert "{context}" in template and "{num_questions}" in template
    assert "{context_str}" not in template
    assert resolve_prompt("Text: {context}") == "Text: {context}"
    reference = cfg("synth", "synth=reference")
    assert reference.prompt == "llamaindex"
    assert "some text" in build_prompt(resolve_prompt(reference.prompt), "some text", 2)


# A Vaswani NPL abstract (a document, never a query) on which SmolLM2 asked only "What is the
# purpose of the text?" with the previous default prompt.
ABSTRACT = (
    "studies in cosmic radio noise at bungalore the techniques in use at banalore for a radio "
    "survey of the sky and the disturbed sun at and are described"
)
PREVIOUS_PROMPT = (
    "Text: {context}\n\nWrite {num_questions} different questions that this text answers, one "
    "per line. Reply with the questions only."
)


def test_the_shipped_prompt_gets_questions_where_the_previous_one_did_not(smollm2):
    synth = cfg("synth", num_questions=2)  # as measured (the synth default; the cpu preset asks 3)
    chat = sharing(smollm2, max_new_tokens=32)
    templates = [PREVIOUS_PROMPT, synth.prompt]
    prompts = [build_prompt(t, ABSTRACT, synth.num_questions) for t in templates]
    before, after = (Counter(), Counter())
    answers = chat.generate(prompts)  # one batch: left padding changes no answer
    kept = [
        parse_questions(a.text, synth, drops, ABSTRACT)
        for a, drops in zip(answers, (before, after), strict=True)
    ]
    assert kept[0] == [] and before["mentions_source"] >= 1, answers[0]
    assert kept[1] and after["mentions_source"] == 0, answers[1]
    assert all("radio noise" in q for q in kept[1]), kept[1]


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
    assert d["coverage"] == 0.75  # chunks with at least one query
    assert (d["keyword_queries"], d["judged"]) == (0, 0)
    assert d["failures"] == {"no_valid_question": 1}
    assert stats.failures == {"b" * 16: "no_valid_question"}
    assert d["tokens_generated"] == 20 + 12 + 18 + 15
    assert d["drops"] == {"duplicate_in_split": 1, "duplicate_in_chunk": 1, "not_a_question": 2}
    assert list(d["drops"]) == sorted(d["drops"])  # stable metrics files


def test_stats_rate_counts_only_fresh_tokens():
    stats = SynthStats(chunks=2, tokens_generated=100, fresh_tokens=30, seconds=2.0)
    assert stats.as_dict()["tokens_per_s"] == 15.0
    assert SynthStats().as_dict()["tokens_per_s"] == 0.0  # all cached: no time spent
    assert SynthStats().as_dict()["coverage"] == 0.0  # no chunks
    assert SynthStats(chunks=3, failures={"a": "x"}).as_dict()["coverage"] == 0.6667


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


# --- keyword queries ---------------------------------------------------------------------------

KEYWORD_CFG = cfg(
    "synth",
    num_questions=2,
    prompt="Text: {context}\nWrite {num_questions} questions.",
    keyword_queries=2,
)


def test_keyword_queries_join_the_dataset_with_their_own_count():
    answers = [Generation("What does the for statement do?", 9), ANSWERS["b" * 16]]
    keyword_answers = [
        # The second line repeats the chunk's question; the third is one word.
        Generation("for loop iteration\nwhat does the for statement do?\nfor\nloop body", 8),
        Generation("with statement context\nfor loop iteration", 6),
    ]
    dataset, stats = synthesize(CHUNKS[:2], answers, KEYWORD_CFG, keyword_answers)
    queries = {q: dataset["relevant_docs"][qid] for qid, q in dataset["queries"].items()}
    assert queries == {
        "What does the for statement do?": ["a" * 16],
        "for loop iteration": ["a" * 16],
        "loop body": ["a" * 16],
        # Chunk b's answer has no question, its keyword queries make it covered.
        "with statement context": ["b" * 16],
    }
    d = stats.as_dict()
    assert (d["questions"], d["keyword_queries"], d["coverage"], d["failed_chunks"]) == (
        4,
        3,
        1.0,
        0,
    )
    assert d["drops"] == {
        "keyword_duplicate_in_chunk": 1,
        "keyword_duplicate_in_split": 1,  # chunk a already has "for loop iteration"
        "keyword_too_short": 1,
        "not_a_question": 1,
    }
    assert d["tokens_generated"] == 9 + 12 + 8 + 6


def test_failed_keyword_answers_are_counted_and_a_chunk_keeps_its_first_failure():
    answers = [ANSWERS["a" * 16], Failure("generation_error: HTTP 400 (too long)")]
    keyword_answers = [Failure("generation_error: HTTP 503"), Failure("generation_error: HTTP 503")]
    dataset, stats = synthesize(CHUNKS[:2], answers, KEYWORD_CFG, keyword_answers)
    assert len(dataset["queries"]) == 2 and stats.keyword_queries == 0
    assert stats.drops == {"keyword_generation_error": 2}
    assert stats.failures == {"b" * 16: "generation_error: HTTP 400 (too long)"}
    # Without a failed question answer, a chunk's failed keyword answer is its reason.
    _, stats = synthesize(CHUNKS[1:2], [ANSWERS["b" * 16]], KEYWORD_CFG, keyword_answers[:1])
    assert stats.failures == {"b" * 16: "generation_error: HTTP 503"}


# --- the judge ---------------------------------------------------------------------------------

JUDGED_CFG = cfg(
    "synth",
    num_questions=2,
    prompt="Text: {context}\nWrite {num_questions} questions.",
    keyword_queries=1,
    judge={"prompt": "{context}\nQuery: {question}\nScore 1-10.", "min_score": 6},
)


def test_the_judge_scores_every_cleaned_query_and_drops_low_and_unparsed_scores():
    answers = [ANSWERS[c["id"]] for c in CHUNKS]
    keyword_answers = [Generation("for statement sequences", 4)] + [Generation("x", 1)] * 3
    targets = judge_targets(CHUNKS, answers, keyword_answers, JUDGED_CFG)
    # Cleaned per chunk, before duplicates across the split: chunk d's first question is judged.
    assert [(c["id"][0], q) for c, q in targets] == [
        ("a", 'What is the "for" statement?'),
        ("a", 'How does the "for" statement iterate over a sequence?'),
        ("a", "for statement sequences"),
        ("c", 'What is the "try" statement?'),
        ("d", 'WHAT is the "for" statement?'),
        ("d", "When does a while loop stop?"),
    ]
    scores = ["Score: 3", "9", "8", "I cannot say", "7", Failure("generation_error: HTTP 503")]
    verdicts = {
        (c["id"], q): s if isinstance(s, Failure) else Generation(s, 2)
        for (c, q), s in zip(targets, scores, strict=True)
    }
    dataset, stats = synthesize(CHUNKS, answers, JUDGED_CFG, keyword_answers, verdicts)
    assert sorted(dataset["queries"].values()) == [
        'How does the "for" statement iterate over a sequence?',
        # Kept: chunk a's copy of it was judged low, so it is no duplicate.
        'WHAT is the "for" statement?',
        "for statement sequences",
    ]
    d = stats.as_dict()
    assert (d["judged"], d["keyword_queries"], d["questions"]) == (6, 1, 3)
    assert {k: v for k, v in d["drops"].items() if k.startswith("judge")} == {
        "judge_generation_error": 1,
        "judge_low": 1,
        "judge_unparsed": 1,
    }
    # Chunk c's only question was unparsed: the chunk has no query left.
    assert stats.failures == {"b" * 16: "no_valid_question", "c" * 16: "no_valid_question"}
    assert d["tokens_generated"] == 20 + 12 + 18 + 15 + 4 + 1 * 3 + 2 * 5


def test_a_judge_drops_nothing_it_scores_high():
    answers = [ANSWERS[c["id"]] for c in CHUNKS]
    plain, _ = synthesize(CHUNKS, answers, CFG)
    judging = cfg("synth", **{**CFG.model_dump(), "judge": JUDGED_CFG.judge.model_dump()})
    targets = judge_targets(CHUNKS, answers, None, judging)
    verdicts = {(c["id"], q): Generation("10", 1) for c, q in targets}
    judged, stats = synthesize(CHUNKS, answers, judging, None, verdicts)
    assert judged == plain
    assert stats.judged == len(targets) == 5
