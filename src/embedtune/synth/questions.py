"""Turn raw LLM answers into clean, distinct questions; every dropped line is counted by reason.

Pure functions on strings, used by the `synth` stage.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from embedtune.config import SynthConfig
from embedtune.text import words

# A list marker needs a space after it, so "**kwargs ...?" and "3.14: ...?" keep their start.
_LEADER = re.compile(r"^(?:[-*•]+|\(?\d{1,2}[.)]|q(?:uestion)?\s*\d*\s*[:.)-])\s+", re.I)
# Emphasis or quotes around the whole line, as a matching pair only.
_WRAPPED = re.compile(r"(\*\*|__|[*_`\"'])(.+)\1", re.S)
# Questions about the source instead of the subject: "According to the passage, ...".
_SOURCE_TALK = re.compile(
    r"\b(?:the|this|that|given|above|provided|following)\s+"
    r"(?:context|passage|text|excerpt|paragraph|document|article|section|snippet)\b",
    re.I,
)
_NUMBER = re.compile(r"\d+")


def clean_line(line: str) -> str:
    """Strip list markers, markdown emphasis and wrapping quotes from one answer line."""
    line = line.strip()
    while True:
        stripped = _LEADER.sub("", line, count=1).strip()
        if wrapped := _WRAPPED.fullmatch(stripped):
            stripped = wrapped.group(2).strip()
        if stripped == line:
            return line
        line = stripped


def longest_copied_run(question: list[str], source: list[str]) -> int:
    """Length of the longest run of consecutive words shared by `question` and `source`."""
    best, previous = 0, [0] * (len(source) + 1)
    for q_word in question:
        current = [0] * (len(source) + 1)
        for j, s_word in enumerate(source, start=1):
            if q_word == s_word:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


@dataclass
class SeenQuestions:
    """Questions kept so far (in one chunk, or in a whole split), for duplicate checks.

    Near duplicates are found through prefix filtering (the all-pairs similarity search method):
    with the words of every question sorted rarest first, two word sets with Jaccard >= t share a
    word among the first n - ceil(t n) + 1 of each. Only those prefix words are indexed, so a
    check compares a question with the few that share a rare word, not with every kept one; the
    answer is the same as comparing all pairs. `frequency` (word -> count) gives the order;
    without it every word counts as equally rare (still exact, less selective).
    """

    threshold: float
    frequency: Counter = field(default_factory=Counter)
    exact: set[str] = field(default_factory=set)
    word_sets: list[frozenset[str]] = field(default_factory=list)
    by_prefix_word: dict[str, list[int]] = field(default_factory=dict)
    empty_seen: bool = False

    def _prefix(self, bag: frozenset[str]) -> list[str]:
        rarest_first = sorted(bag, key=lambda w: (self.frequency[w], w))
        return rarest_first[: len(bag) - math.ceil(self.threshold * len(bag) - 1e-9) + 1]

    def duplicate_kind(self, question: str) -> str | None:
        if question.casefold() in self.exact:
            return "duplicate"
        bag = frozenset(words(question))
        if not bag:
            return "near_duplicate" if self.empty_seen else None
        candidates = {i for w in self._prefix(bag) for i in self.by_prefix_word.get(w, ())}
        if any(jaccard(bag, self.word_sets[i]) >= self.threshold for i in candidates):
            return "near_duplicate"
        return None

    def add(self, question: str) -> None:
        self.exact.add(question.casefold())
        bag = frozenset(words(question))
        self.empty_seen |= not bag
        for word in self._prefix(bag):
            self.by_prefix_word.setdefault(word, []).append(len(self.word_sets))
        self.word_sets.append(bag)


def word_frequency(texts: list[str]) -> Counter:
    """In how many of `texts` each word occurs: the rarity order for `SeenQuestions`."""
    return Counter(w for text in texts for w in set(words(text)))


def content_problem(line: str, chunk_words: list[str], cfg: SynthConfig) -> str | None:
    """Why a line of either kind talks about its source or copies its chunk, or None."""
    if _SOURCE_TALK.search(line):
        return "mentions_source"
    if chunk_words and longest_copied_run(words(line), chunk_words) >= cfg.max_copied_words:
        return "copies_chunk"
    return None


def line_problem(line: str, chunk_words: list[str], cfg: SynthConfig) -> str | None:
    """Why a cleaned line is not a usable question, or None when it is one."""
    if not line.endswith("?"):
        return "not_a_question"
    if len(line) < cfg.min_question_chars:
        return "too_short"
    if len(line) > cfg.max_question_chars:
        return "too_long"
    return content_problem(line, chunk_words, cfg)


def keyword_problem(line: str, chunk_words: list[str], cfg: SynthConfig) -> str | None:
    """Why a cleaned line is not a usable keyword query ("ruby laser efficiency"), or None."""
    if line.endswith(":"):
        return "not_a_query"  # a heading such as "Here are two search queries:"
    count = len(words(line))
    if count < cfg.min_keyword_words:
        return "too_short"
    if count > cfg.max_keyword_words:
        return "too_long"
    return content_problem(line, chunk_words, cfg)


def parse_lines(
    answer: str,
    limit: int,
    problem_of: Callable[[str], str | None],
    seen: SeenQuestions,
    drops: Counter,
    prefix: str = "",
) -> list[str]:
    """Keep up to `limit` lines of `answer` that `problem_of` accepts and `seen` does not hold.

    Every non-empty line not kept is counted in `drops` under `prefix` + its reason.
    """
    kept: list[str] = []
    for raw in answer.splitlines():
        if not raw.strip():
            continue
        line = clean_line(raw)
        problem = problem_of(line)
        if problem is None and (kind := seen.duplicate_kind(line)):
            problem = f"{kind}_in_chunk"
        if problem is None and len(kept) >= limit:
            problem = "over_limit"
        if problem:
            drops[prefix + problem] += 1
            continue
        kept.append(line)
        seen.add(line)
    return kept


def parse_questions(
    answer: str, cfg: SynthConfig, drops: Counter, chunk_text: str = ""
) -> list[str]:
    """Keep up to `cfg.num_questions` distinct, well-formed questions from an LLM answer.

    Args:
        answer: the raw completion, one question a line (with whatever else the model added).
        cfg: number of questions and cleaning bounds.
        drops: incremented by reason for every non-empty line that is not kept.
        chunk_text: the chunk the questions are about, to catch verbatim copies.
    """
    problem_of = partial(line_problem, chunk_words=words(chunk_text), cfg=cfg)
    return parse_lines(
        answer, cfg.num_questions, problem_of, SeenQuestions(cfg.near_duplicate), drops
    )


def parse_keywords(
    answer: str, cfg: SynthConfig, drops: Counter, chunk_text: str, questions: list[str]
) -> list[str]:
    """Keep up to `cfg.keyword_queries` keyword queries from an answer to the keyword prompt,
    none of them (near) duplicates of the chunk's `questions`; drops are counted as
    `keyword_<reason>`."""
    seen = SeenQuestions(cfg.near_duplicate)
    for question in questions:
        seen.add(question)
    problem_of = partial(keyword_problem, chunk_words=words(chunk_text), cfg=cfg)
    return parse_lines(answer, cfg.keyword_queries, problem_of, seen, drops, "keyword_")


def parse_score(answer: str) -> int | None:
    """A judge's score: the first integer of its answer if it is 1 to 10, else None."""
    found = _NUMBER.search(answer)
    score = int(found.group()) if found else 0
    return score if 1 <= score <= 10 else None
