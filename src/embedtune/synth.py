"""Stage `synth`: a local LLM writes questions for each chunk; the result is a QA dataset.

Usage: python -m embedtune.synth   (reads params.yaml; run by `dvc repro`)

Writes data/qa/<split>.json in LlamaIndex's `EmbeddingQAFinetuneDataset` layout (`queries`,
`corpus`, `relevant_docs`, `mode`), loadable with `EmbeddingQAFinetuneDataset.from_json`, and
metrics/synth.json with counts of what was kept and dropped.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from embedtune import io
from embedtune.config import SynthConfig, load_params
from embedtune.errors import run_stage
from embedtune.llm import Generation

# A list marker needs a space after it, so "**kwargs ...?" and "3.14: ...?" keep their start.
_LEADER = re.compile(r"^(?:[-*•]+|\(?\d{1,2}[.)]|q(?:uestion)?\s*\d*\s*[:.)-])\s+", re.I)
# Emphasis or quotes around the whole line, as a matching pair only.
_WRAPPED = re.compile(r"(\*\*|__|[*_`\"'])(.+)\1", re.S)


def build_prompt(template: str, context: str, num_questions: int) -> str:
    return template.format(context=context, num_questions=num_questions)


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


def parse_questions(answer: str, cfg: SynthConfig, drops: Counter) -> list[str]:
    """Keep up to `cfg.num_questions` distinct, well-formed questions from an LLM answer."""
    kept: list[str] = []
    seen: set[str] = set()
    for raw in answer.splitlines():
        if not raw.strip():
            continue
        line = clean_line(raw)
        if not line.endswith("?"):
            drops["not_a_question"] += 1
        elif len(line) < cfg.min_question_chars:
            drops["too_short"] += 1
        elif len(line) > cfg.max_question_chars:
            drops["too_long"] += 1
        elif line.casefold() in seen:
            drops["duplicate_in_chunk"] += 1
        elif len(kept) >= cfg.num_questions:
            drops["over_limit"] += 1
        else:
            kept.append(line)
            seen.add(line.casefold())
    return kept


def query_id(chunk_id: str, question: str) -> str:
    return hashlib.sha256(f"{chunk_id}\0{question}".encode()).hexdigest()[:16]


@dataclass
class SynthStats:
    chunks: int = 0
    questions: int = 0
    chunks_without_question: int = 0
    tokens_generated: int = 0
    seconds: float = 0.0
    drops: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        rate = self.tokens_generated / self.seconds if self.seconds else 0.0
        return {
            "chunks": self.chunks,
            "questions": self.questions,
            "chunks_without_question": self.chunks_without_question,
            "tokens_generated": self.tokens_generated,
            "tokens_per_s": round(rate, 2),
            "drops": dict(sorted(self.drops.items())),
        }


def synthesize(
    chunks: list[dict],
    complete: Callable[[list[str]], list[Generation]],
    cfg: SynthConfig,
) -> tuple[dict, SynthStats]:
    """Ask for questions about every chunk and assemble an `EmbeddingQAFinetuneDataset` dict.

    Args:
        chunks: node records with `id` and `text`, in document order.
        complete: generates one completion per prompt (batching happens inside).
        cfg: number of questions, prompt template and cleaning bounds.

    Returns:
        The dataset as a JSON-ready dict, and counts for metrics.
    """
    stats = SynthStats(chunks=len(chunks))
    prompts = [build_prompt(cfg.prompt, c["text"], cfg.num_questions) for c in chunks]
    started = time.perf_counter()
    answers = complete(prompts)
    stats.seconds = time.perf_counter() - started
    queries, relevant, seen = {}, {}, set()
    for chunk, answer in zip(chunks, answers, strict=True):
        stats.tokens_generated += answer.new_tokens
        questions = []
        for q in parse_questions(answer.text, cfg, stats.drops):
            # The same question for two chunks has no single right answer: keep the first.
            if q.casefold() in seen:
                stats.drops["duplicate_in_split"] += 1
                continue
            seen.add(q.casefold())
            questions.append(q)
        if not questions:
            stats.chunks_without_question += 1
        for q in questions:
            qid = query_id(chunk["id"], q)
            queries[qid] = q
            relevant[qid] = [chunk["id"]]
    stats.questions = len(queries)
    corpus = {c["id"]: c["text"] for c in chunks}
    return {"queries": queries, "corpus": corpus, "relevant_docs": relevant, "mode": "text"}, stats


def _progress_complete(llm, batch_size: int, label: str):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from embedtune.llm import generate_batched

    def complete(prompts: list[str]) -> list[Generation]:
        columns = (
            TextColumn(f"synth {label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("chunks"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns) as progress:
            task = progress.add_task(label, total=len(prompts))
            return generate_batched(
                llm.generate, prompts, batch_size, lambda n: progress.advance(task, n)
            )

    return complete


def main() -> None:
    from embedtune.llm import TransformersChat

    params = load_params()
    llm = TransformersChat(params.llm, params.seed).load()
    metrics = {}
    for split in io.SPLITS:
        chunks = io.read_jsonl(io.CHUNKS_DIR / f"{split}.jsonl")[: params.synth.max_chunks]
        complete = _progress_complete(llm, params.llm.batch_size, split)
        dataset, stats = synthesize(chunks, complete, params.synth)
        io.write_json(io.QA_DIR / f"{split}.json", dataset)
        metrics[split] = stats.as_dict()
        print(
            f"{split:<10} {stats.chunks:>5} chunks -> {stats.questions:>5} questions "
            f"({stats.tokens_generated / max(stats.seconds, 1e-9):.1f} tokens/s)"
        )
    io.write_json(io.METRICS_DIR / "synth.json", metrics)


if __name__ == "__main__":
    run_stage("synth", main)
