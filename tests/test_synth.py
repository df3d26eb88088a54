"""Answer parsing on real small-LLM output, dataset assembly and batched generation."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest
from llama_index.finetuning import EmbeddingQAFinetuneDataset

from embedtune.answers import AnswerCache, Failure, answer_all, answer_key
from embedtune.config import LLMConfig, SynthConfig
from embedtune.errors import EmbedtuneError
from embedtune.io import write_json
from embedtune.llm import Generation
from embedtune.questions import (
    SeenQuestions,
    clean_line,
    jaccard,
    longest_copied_run,
    parse_questions,
    word_frequency,
    words,
)
from embedtune.synth import (
    SynthStats,
    build_prompt,
    check_failure_rate,
    query_id,
    resolve_prompt,
    synthesize,
)

CFG = SynthConfig(num_questions=2, prompt="Text: {context}\nWrite {num_questions} questions.")

# Verbatim answers of SmolLM2-135M-Instruct to the synth prompt on Python reference chunks.
CLEAN = '1. What is the "for" statement?\n2. How does the "for" statement iterate over a sequence?'
RAMBLING = (
    "1. What is the purpose of lambda expressions?\n2. How to create a lambda expression?\n\n"
    "Here's the answer:\n\n**1. What is the purpose of lambda expressions?**\n\n"
    "The purpose of lambda expressions is to create anonymous functions."
)
REPEATED = '1. What is the "try" statement?\n2. What is the "try" statement?\n\nHere is the answer:'
NO_QUESTION = 'The text provides a concise explanation of the "with" statement.'


def parse(answer: str, cfg: SynthConfig = CFG, chunk: str = "") -> tuple[list[str], dict]:
    drops = Counter()
    return parse_questions(answer, cfg, drops, chunk), dict(drops)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("1. What is the for statement?", "What is the for statement?"),
        ("  2) How does while work?  ", "How does while work?"),
        ("(3) Why use pass?", "Why use pass?"),
        ("- What does del remove?", "What does del remove?"),
        ("* What does yield return?", "What does yield return?"),
        ("• How is raise used?", "How is raise used?"),
        ("Q1: What is an import?", "What is an import?"),
        ("Question 2: How does global work?", "How does global work?"),
        ("Q: What is nonlocal?", "What is nonlocal?"),
        ("**1. What is the purpose of lambda?**", "What is the purpose of lambda?"),
        ('"What does assert check?"', "What does assert check?"),
        ("'What does return do?'", "What does return do?"),
        ("`What is augmented assignment?`", "What is augmented assignment?"),
        ("- 1. *What is break?*", "What is break?"),
        ('What is the "for" statement?', 'What is the "for" statement?'),
        ("Here's the answer:", "Here's the answer:"),
    ],
)
def test_clean_line(line, expected):
    assert clean_line(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        '"for" and "while": which one is the loop over an iterable?',
        "`async with`: what does it enter?",
        "__init__ and __new__: which runs first?",
        "**kwargs in a call: what does it unpack?",
        "3.14: is it a float literal?",
    ],
)
def test_clean_line_keeps_unbalanced_wrappers(line):
    assert clean_line(line) == line


def test_parse_clean_answer():
    kept, drops = parse(CLEAN)
    assert kept == [
        'What is the "for" statement?',
        'How does the "for" statement iterate over a sequence?',
    ]
    assert drops == {}


def test_parse_rambling_answer():
    kept, drops = parse(RAMBLING)
    assert kept == [
        "What is the purpose of lambda expressions?",
        "How to create a lambda expression?",
    ]
    # "Here's the answer:" and the explanation; the bold repeat of question 1.
    assert drops == {"not_a_question": 2, "duplicate_in_chunk": 1}


def test_parse_repeated_question():
    kept, drops = parse(REPEATED)
    assert kept == ['What is the "try" statement?']
    assert drops == {"duplicate_in_chunk": 1, "not_a_question": 1}


def test_parse_no_question():
    assert parse(NO_QUESTION) == ([], {"not_a_question": 1})


def test_parse_empty_answer():
    assert parse("\n\n  \n") == ([], {})


def test_parse_bullets_and_q_labels():
    kept, drops = parse("- What does pass do?\n* Why use yield?")
    assert kept == ["What does pass do?", "Why use yield?"]
    kept, drops = parse("Q1: What is del for?\nQuestion 2: How does global work?")
    assert kept == ["What is del for?", "How does global work?"]
    assert drops == {}


def test_parse_quoted_questions():
    kept, _ = parse("\"What is nonlocal?\"\n'Why is global needed?'")
    assert kept == ["What is nonlocal?", "Why is global needed?"]


def test_parse_duplicate_is_case_insensitive():
    kept, drops = parse("What is a lambda?\nWHAT IS A LAMBDA?")
    assert kept == ["What is a lambda?"]
    assert drops == {"duplicate_in_chunk": 1}


def test_parse_length_bounds():
    cfg = SynthConfig(
        num_questions=3, prompt="{context}", min_question_chars=12, max_question_chars=40
    )
    kept, drops = parse("Why?\nWhat is a lambda?\nWhat" + " very" * 10 + " long question?", cfg)
    assert kept == ["What is a lambda?"]
    assert drops == {"too_short": 1, "too_long": 1}


def test_parse_keeps_at_most_num_questions():
    cfg = SynthConfig(num_questions=1, prompt="{context}")
    kept, _ = parse(CLEAN, cfg)
    assert kept == ['What is the "for" statement?']


def test_every_answer_line_is_kept_or_counted():
    answer = "- What does pass do?\n* Why use yield?\n• How is raise used?"
    kept, drops = parse(answer)
    assert len(kept) + sum(drops.values()) == 3


def test_build_prompt():
    assert build_prompt(CFG.prompt, "some text", 2) == "Text: some text\nWrite 2 questions."


# synthesize() with an injected, deterministic completion function.

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


@pytest.fixture(scope="module")
def synthesized() -> tuple[dict, object]:
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
    assert d["drops"] == {"duplicate_in_chunk": 1, "duplicate_in_split": 1, "not_a_question": 2}


def test_query_ids_are_stable_and_content_derived(synthesized):
    dataset, _ = synthesized
    again, _ = synthesize(CHUNKS, [ANSWERS[c["id"]] for c in CHUNKS], CFG)
    assert again == dataset
    for qid, question in dataset["queries"].items():
        assert re.fullmatch(r"[0-9a-f]{16}", qid)
        assert qid == query_id(dataset["relevant_docs"][qid][0], question)
    assert query_id("a" * 16, "What?") != query_id("b" * 16, "What?")
    assert query_id("a" * 16, "What?") != query_id("a" * 16, "Why?")


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


def test_failure_rate_over_limit_stops_with_one_line():
    stats = SynthStats(chunks=10, failures={f"{i:016x}": "no_valid_question" for i in range(3)})
    check_failure_rate("train", stats, SynthConfig(prompt="{context}", max_failure_rate=0.3))
    with pytest.raises(EmbedtuneError, match=r"synth train: 3 of 10 chunks failed .*0.2"):
        check_failure_rate("train", stats, SynthConfig(prompt="{context}", max_failure_rate=0.2))


def test_reference_prompt_is_llamaindex_template():
    template = resolve_prompt("llamaindex")
    assert "{context}" in template and "{num_questions}" in template
    assert "{context_str}" not in template
    assert resolve_prompt("Text: {context}") == "Text: {context}"


# answer_all: longest prompts first, results in input order, cached per finished batch.


def _key(prompt: str) -> str:
    return answer_key(LLMConfig(model="m"), 0, prompt)


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


def test_answer_key_covers_what_shapes_the_answer():
    base = LLMConfig(model="m")
    key = answer_key(base, 0, "p")
    assert answer_key(base, 1, "p") == key  # greedy: the seed changes nothing
    assert answer_key(LLMConfig(model="m", batch_size=64), 0, "p") == key
    assert answer_key(base, 0, "q") != key
    assert answer_key(LLMConfig(model="other"), 0, "p") != key
    assert answer_key(LLMConfig(model="m", max_new_tokens=7), 0, "p") != key
    sampled = LLMConfig(model="m", temperature=0.7)
    assert answer_key(sampled, 0, "p") != answer_key(sampled, 1, "p")


def test_answer_all_empty():
    assert answer_all([], lambda batch: pytest.fail("no call expected"), 4, _key) == ([], 0)


# The newer filters on real-looking outputs.


def test_questions_about_the_source_are_dropped():
    kept, drops = parse(
        "1. What does the passage say about loops?\n2. What does the text describe?"
    )
    assert kept == []
    assert drops == {"mentions_source": 2}


def test_questions_copying_the_chunk_are_dropped():
    topic_text = (
        "The for statement is used to iterate over the elements of a sequence such as a string"
    )
    answer = (
        "Is the for statement used to iterate over the elements of a sequence such as a string?\n"
        "What can a for loop iterate over?"
    )
    kept, drops = parse(answer, chunk=topic_text)
    assert kept == ["What can a for loop iterate over?"]
    assert drops == {"copies_chunk": 1}
    assert longest_copied_run(["a", "b", "c", "x"], ["z", "a", "b", "c"]) == 3


def test_near_duplicates_are_dropped():
    answer = "What does the for statement do?\nWhat does the for statement do exactly?"
    kept, drops = parse(answer)
    assert kept == ["What does the for statement do?"]
    assert drops == {"near_duplicate_in_chunk": 1}


def test_prepare_runs_only_when_something_is_not_cached(tmp_path):
    cache = AnswerCache(tmp_path)
    cache.put(_key("cached"), Generation("Why?", 1))

    def refuse() -> None:
        raise EmbedtuneError("llm.quantization=4bit needs a CUDA GPU")

    results, reused = answer_all(["cached"], pytest.fail, 2, _key, cache, prepare=refuse)
    assert (results, reused) == ([Generation("Why?", 1)], 1)
    with pytest.raises(EmbedtuneError, match="needs a CUDA GPU"):
        answer_all(["cached", "new"], pytest.fail, 2, _key, cache, prepare=refuse)


def test_out_of_memory_halves_the_batch():
    import torch

    from embedtune.answers import halve_on_oom

    sizes: list[int] = []

    def small_gpu(batch: list[str]) -> list[Generation]:
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return [Generation(p + "?", 1) for p in batch]

    answers = halve_on_oom(small_gpu)(["a", "b", "c", "d", "e"])
    assert [a.text for a in answers] == ["a?", "b?", "c?", "d?", "e?"]
    assert sizes == [5, 2, 3, 1, 2]


def brute_force_kept(questions: list[str], threshold: float) -> list[str]:
    kept: list[frozenset[str]] = []
    out = []
    for q in questions:
        bag = frozenset(words(q))
        if any(jaccard(bag, other) >= threshold for other in kept):
            continue
        kept.append(bag)
        out.append(q)
    return out


def indexed_kept(questions: list[str], threshold: float, frequency) -> list[str]:
    seen = SeenQuestions(threshold, frequency)
    out = []
    for q in questions:
        if seen.duplicate_kind(q) is None:
            seen.add(q)
            out.append(q)
    return out


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8, 1.0])
def test_prefix_filtered_near_duplicates_equal_all_pairs(threshold):
    rng = random.Random(threshold)
    vocabulary = [f"w{i}" for i in range(40)] + ["what", "is", "the", "how", "does"]
    questions = [" ".join(rng.choices(vocabulary, k=rng.randint(1, 12))) + "?" for _ in range(600)]
    expected = brute_force_kept(questions, threshold)
    assert 0 < len(expected) < len(questions)
    for frequency in (word_frequency(questions), Counter()):
        assert indexed_kept(questions, threshold, frequency) == expected


def test_prefix_index_compares_few_pairs():
    rng = random.Random(0)
    questions = [
        f"What does the {rng.randrange(10**6)} statement {rng.randrange(10**6)} do in "
        f"{rng.randrange(10**6)}?"
        for _ in range(2000)
    ]
    seen = SeenQuestions(0.8, word_frequency(questions))
    for q in questions:
        seen.add(q)
    # Common words ("what", "the", "do") are never indexed: the rare ones come first.
    assert not {"what", "the", "does", "do", "in"} & set(seen.by_prefix_word)
    assert max(len(ids) for ids in seen.by_prefix_word.values()) < 10
