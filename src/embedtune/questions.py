"""Turn raw LLM answers into clean, distinct questions; every dropped line is counted by reason.

Pure functions on strings, used by the `synth` stage.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from embedtune.config import SynthConfig

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
_WORD = re.compile(r"\w+")


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


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


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
    """Questions kept so far (in one chunk, or in a whole split), for duplicate checks."""

    threshold: float
    exact: set[str] = field(default_factory=set)
    word_sets: list[frozenset[str]] = field(default_factory=list)

    def duplicate_kind(self, question: str) -> str | None:
        if question.casefold() in self.exact:
            return "duplicate"
        bag = frozenset(words(question))
        if any(jaccard(bag, other) >= self.threshold for other in self.word_sets):
            return "near_duplicate"
        return None

    def add(self, question: str) -> None:
        self.exact.add(question.casefold())
        self.word_sets.append(frozenset(words(question)))


def line_problem(line: str, chunk_words: list[str], cfg: SynthConfig) -> str | None:
    """Why a cleaned line is not a usable question, or None when it is one."""
    if not line.endswith("?"):
        return "not_a_question"
    if len(line) < cfg.min_question_chars:
        return "too_short"
    if len(line) > cfg.max_question_chars:
        return "too_long"
    if _SOURCE_TALK.search(line):
        return "mentions_source"
    if chunk_words and longest_copied_run(words(line), chunk_words) >= cfg.max_copied_words:
        return "copies_chunk"
    return None


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
    kept: list[str] = []
    seen = SeenQuestions(cfg.near_duplicate)
    chunk_words = words(chunk_text)
    for raw in answer.splitlines():
        if not raw.strip():
            continue
        line = clean_line(raw)
        problem = line_problem(line, chunk_words, cfg)
        if problem is None and (kind := seen.duplicate_kind(line)):
            problem = f"{kind}_in_chunk"
        if problem is None and len(kept) >= cfg.num_questions:
            problem = "over_limit"
        if problem:
            drops[problem] += 1
            continue
        kept.append(line)
        seen.add(line)
    return kept
