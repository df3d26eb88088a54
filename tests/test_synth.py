"""Answer parsing on real small-LLM output, dataset assembly and batched generation."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from llama_index.finetuning import EmbeddingQAFinetuneDataset

from embedtune.config import SynthConfig
from embedtune.io import write_json
from embedtune.llm import Generation, generate_batched
from embedtune.synth import build_prompt, clean_line, parse_questions, query_id, synthesize

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


def parse(answer: str, cfg: SynthConfig = CFG) -> tuple[list[str], dict]:
    drops = Counter()
    return parse_questions(answer, cfg, drops), dict(drops)


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


def fake_complete(prompts: list[str]) -> list[Generation]:
    by_prompt = {build_prompt(CFG.prompt, c["text"], 2): ANSWERS[c["id"]] for c in CHUNKS}
    return [by_prompt[p] for p in prompts]


@pytest.fixture(scope="module")
def synthesized() -> tuple[dict, object]:
    return synthesize(CHUNKS, fake_complete, CFG)


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
    assert (d["chunks"], d["questions"], d["chunks_without_question"]) == (4, 4, 1)
    assert d["tokens_generated"] == 20 + 12 + 18 + 15
    assert d["drops"] == {"duplicate_in_chunk": 1, "duplicate_in_split": 1, "not_a_question": 2}


def test_query_ids_are_stable_and_content_derived(synthesized):
    dataset, _ = synthesized
    again, _ = synthesize(CHUNKS, fake_complete, CFG)
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
        synthesize(CHUNKS, lambda prompts: fake_complete(prompts)[:-1], CFG)


# generate_batched: longest prompts first, results in input order.


def test_generate_batched_order_and_batches():
    messages = ["bb", "a", "dddd", "ccc", "ee", "f", "gggggg"]
    calls: list[list[str]] = []
    progress: list[int] = []

    def generate(batch: list[str]) -> list[Generation]:
        calls.append(list(batch))
        return [Generation(m.upper(), len(m)) for m in batch]

    results = generate_batched(generate, messages, batch_size=3, on_batch=progress.append)
    assert [g.text for g in results] == [m.upper() for m in messages]
    assert [g.new_tokens for g in results] == [len(m) for m in messages]
    # Longest first; equal lengths keep input order ("bb" before "ee", "a" before "f").
    assert calls == [["gggggg", "dddd", "ccc"], ["bb", "ee", "a"], ["f"]]
    assert progress == [3, 3, 1]


def test_generate_batched_empty():
    assert generate_batched(lambda batch: pytest.fail("no call expected"), [], 4) == []
