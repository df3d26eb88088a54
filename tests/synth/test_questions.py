"""Answer parsing on real small-LLM output: list markers, wrappers, filters, duplicates, the
prefix-filtered near-duplicate index (exactly as all pairs), keyword queries, judge scores."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from embedtune.config import SynthConfig
from embedtune.synth.questions import (
    SeenQuestions,
    clean_line,
    jaccard,
    keyword_problem,
    line_problem,
    longest_copied_run,
    parse_keywords,
    parse_questions,
    parse_score,
    word_frequency,
    words,
)
from tests.helpers import cfg
from tests.helpers.synth import CLEAN, NO_QUESTION, RAMBLING, REPEATED

CFG = cfg("synth", num_questions=2, prompt="Text: {context}\nWrite {num_questions} questions.")


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
    bounded = cfg("synth", num_questions=3, min_question_chars=12, max_question_chars=40)
    kept, drops = parse("Why?\nWhat is a lambda?\nWhat" + " very" * 10 + " long question?", bounded)
    assert kept == ["What is a lambda?"]
    assert drops == {"too_short": 1, "too_long": 1}


def test_parse_keeps_at_most_num_questions():
    kept, drops = parse(CLEAN, cfg("synth", num_questions=1))
    assert kept == ['What is the "for" statement?']
    assert drops == {"over_limit": 1}


def test_every_answer_line_is_kept_or_counted():
    answer = "- What does pass do?\n* Why use yield?\n• How is raise used?"
    kept, drops = parse(answer)
    assert len(kept) + sum(drops.values()) == 3
    assert drops == {"over_limit": 1}


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
    assert longest_copied_run([], ["a"]) == 0
    # The bound is synth.max_copied_words.
    lenient = cfg("synth", max_copied_words=20)
    assert parse(answer, lenient, chunk=topic_text)[1] == {}


def test_line_problem_order():
    assert line_problem("What?", [], CFG) == "too_short"  # checked before the source filter
    assert line_problem("What does the text say here?", [], CFG) == "mentions_source"
    assert line_problem("What does this loop do here?", [], CFG) is None
    assert line_problem("No question mark here.", [], CFG) == "not_a_question"


def test_near_duplicates_are_dropped():
    answer = "What does the for statement do?\nWhat does the for statement do exactly?"
    kept, drops = parse(answer)
    assert kept == ["What does the for statement do?"]
    assert drops == {"near_duplicate_in_chunk": 1}
    # synth.near_duplicate is the Jaccard threshold: at 0.9 these two are distinct.
    assert parse(answer, cfg("synth", near_duplicate=0.9))[0] == answer.splitlines()


def test_words_and_jaccard():
    assert words("What's `x`, IS it?") == ["what", "s", "x", "is", "it"]
    assert jaccard(frozenset("ab"), frozenset("bc")) == 1 / 3
    assert jaccard(frozenset(), frozenset()) == 1.0
    assert word_frequency(["a a b", "b c"]) == Counter({"b": 2, "a": 1, "c": 1})


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


def test_questions_without_words_are_duplicates_of_each_other():
    seen = SeenQuestions(0.8)
    assert seen.duplicate_kind("?") is None
    seen.add("?")
    assert seen.duplicate_kind("?") == "duplicate"
    assert seen.duplicate_kind("!?") == "near_duplicate"
    assert seen.duplicate_kind("Why?") is None


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


# --- keyword queries -------------------------------------------------------------------------

KEYWORDS = cfg("synth", keyword_queries=2, min_keyword_words=2, max_keyword_words=6)
# Verbatim answers of SmolLM2-135M-Instruct to the shipped keyword prompt on Vaswani NPL abstracts.
TOPICS = (
    "The two key topics of the information above are:\n\n1. The dynamo theory\n2. The ionosphere"
    "\n\nThese topics are listed in a list format with each topic separated by a comma and a space."
)
ONE_WORD = (
    'The information above is a list of two key topics:\n\n1. "friedel sum rule"\n2. "system"'
)
ECHOED = "abnormal propagation\n\nabnormal propagation\n\nabnormal propagation"


def keywords(answer: str, questions=(), config=KEYWORDS, chunk: str = "") -> tuple[list, dict]:
    drops = Counter()
    return parse_keywords(answer, config, drops, chunk, list(questions)), dict(drops)


def test_keyword_queries_from_real_answers():
    assert keywords(TOPICS) == (
        ["The dynamo theory", "The ionosphere"],
        {"keyword_not_a_query": 1, "keyword_too_long": 1},
    )
    assert keywords(ONE_WORD) == (
        ["friedel sum rule"],
        {"keyword_not_a_query": 1, "keyword_too_short": 1},
    )
    assert keywords(ECHOED) == (["abnormal propagation"], {"keyword_duplicate_in_chunk": 2})


def test_keyword_queries_are_no_duplicates_of_the_chunks_questions():
    questions = ["What is the dynamo theory?", "How does dynamo theory explain currents?"]
    answer = (
        "what is the dynamo theory?\nhow does dynamo theory explain currents\nionosphere currents"
    )
    kept, drops = keywords(answer, questions)
    assert kept == ["ionosphere currents"]
    assert drops == {"keyword_duplicate_in_chunk": 1, "keyword_near_duplicate_in_chunk": 1}
    # Without those questions both lines are keyword queries of up to 6 words.
    assert keywords(answer)[0] == answer.splitlines()[:2]


def test_keyword_queries_keep_at_most_keyword_queries():
    answer = "ruby laser efficiency\nionosphere electron content\ncosmic radio noise"
    assert keywords(answer) == (answer.splitlines()[:2], {"keyword_over_limit": 1})
    one = cfg("synth", keyword_queries=1)
    assert keywords(answer, config=one)[0] == ["ruby laser efficiency"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ruby laser efficiency", None),
        ("What is a ruby laser?", None),  # a short question is a query too
        ("Here are two search queries:", "not_a_query"),
        ("laser", "too_short"),  # synth.min_keyword_words = 2
        ("theory of the ruby laser and its efficiency", "too_long"),  # 8 > 6 words
        ("the passage on lasers", "mentions_source"),
    ],
)
def test_keyword_problem(line, expected):
    assert keyword_problem(line, [], KEYWORDS) == expected


def test_keyword_word_bounds_are_the_config():
    wide = cfg("synth", min_keyword_words=1, max_keyword_words=8)
    assert keyword_problem("laser", [], wide) is None
    assert keyword_problem("theory of the ruby laser and its efficiency", [], wide) is None
    copied = cfg("synth", max_copied_words=3)
    chunk = words("the ruby laser efficiency was measured")
    assert keyword_problem("ruby laser efficiency", chunk, copied) == "copies_chunk"


# --- judge scores ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ("8", 8),
        ("10", 10),
        ("Score: 7/10", 7),  # the first integer
        ("The answer to this question is 10.", 10),
        ("I'd give it a 3.5", 3),
        ("0", None),
        ("11", None),
        ("The purpose of the transistor is to amplify signals.", None),
        ("", None),
    ],
)
def test_parse_score(answer, score):
    assert parse_score(answer) == score
