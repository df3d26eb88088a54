"""Stage `synth`: a local LLM writes questions for each chunk; the result is a QA dataset.

Usage: python -m embedtune.synth   (reads params.yaml; run by `dvc repro`)

Writes data/qa/<split>.json in LlamaIndex's `EmbeddingQAFinetuneDataset` layout (`queries`,
`corpus`, `relevant_docs`, `mode`), loadable with `EmbeddingQAFinetuneDataset.from_json`,
data/qa/failures.json (chunks without a question, with the reason), and metrics/synth.json.
With `synth.keyword_queries`, a second prompt per chunk asks for short keyword queries; with
`synth.judge`, the same LLM scores every kept query and low scores are dropped. All answers are
cached by content (see `embedtune.synth.llm.answers`): a killed run resumes, a rerun asks
nothing, and a new document only costs its own chunks. A split that asks the LLM nothing keeps
the figures of the run that did (cache hits, tokens/s) when the rest of its metrics is
unchanged, so the same inputs give a byte-identical metrics/synth.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import astuple, dataclass
from pathlib import Path

from embedtune import io, progress
from embedtune.config import SynthConfig, load_params
from embedtune.stage import run_stage
from embedtune.synth.llm.answers import (
    AnswerCache,
    answer_all,
    answer_key,
    default_cache_dir,
    halve_on_oom,
)
from embedtune.synth.llm.base import Generation, backend_config, make_chat
from embedtune.synth.qa import (
    SynthStats,
    build_judge_prompt,
    build_prompt,
    check_failure_rate,
    has_question,
    judge_targets,
    resolve_prompt,
    synthesize,
)

PARAMS = {"seed": int, "llm": backend_config, "synth": SynthConfig}
METRICS_FILE = io.METRICS_DIR / "synth.json"


@dataclass
class Spent:
    """What answering some prompts cost."""

    cached: int = 0  # answers taken from the cache
    asked: int = 0  # answers asked of the LLM (damaged cache entries included)
    damaged: int = 0  # damaged cache entries met
    tokens: int = 0  # generated now
    seconds: float = 0.0

    def __add__(self, other: Spent) -> Spent:
        return Spent(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


class LazyChat:
    """Loads the LLM only when some prompt is not cached, so a fully cached run loads none."""

    def __init__(self, params):
        self.llm, self.seed = params.llm, params.seed
        self.chat = None

    def configure(self, llm, seed: int) -> None:
        """Generate with these settings from now on (retries sample), without reloading."""
        self.llm, self.seed = llm, seed
        if self.chat is not None:
            self.chat.cfg, self.chat.seed = llm, seed

    def load(self) -> None:
        if self.chat is None:
            self.chat = make_chat(self.llm, self.seed).load()

    def __call__(self, prompts: list[str]) -> list[Generation]:
        return halve_on_oom(self.chat.generate)(prompts)


def answer_split(split: str, prompts: list[str], generate: LazyChat, cache) -> tuple:
    """Answer one split's prompts, reporting progress (chunks, tokens/s, ETA: `progress`).

    Returns:
        The answers, and what they cost (`Spent`).
    """
    started, damaged = time.perf_counter(), cache.damaged
    tokens = 0
    with progress.task(f"synth {split}", len(prompts), "chunks") as bar:

        def on_batch(answers: list) -> None:
            nonlocal tokens
            new = sum(a.new_tokens for a in answers if isinstance(a, Generation))
            tokens += new
            bar.advance(len(answers), tokens=new)

        answers, reused = answer_all(
            prompts,
            generate,
            generate.llm.batch_size,
            lambda p: answer_key(generate.llm, generate.seed, p),
            cache,
            on_batch,
            generate.load,
        )
        bar.advance(reused)  # answers read back from the cache
    seconds = time.perf_counter() - started
    asked = len(prompts) - reused
    return answers, Spent(reused, asked, cache.damaged - damaged, tokens, seconds)


def retry_unanswered(split, chunks, prompts, answers, generate, params, cache) -> tuple:
    """Ask again, with seeded sampling, the chunks whose answer gave no valid question, up to
    `synth.attempts` answers per chunk; a retry's answer replaces the first only when it holds a
    question. Retries are cached like any answer (the seed is part of their key).

    Returns:
        How many chunks were asked again, how many of them got a question, and what the
        retries cost (`Spent`).
    """
    cfg = params.synth
    retried: set[int] = set()
    recovered, spent = 0, Spent()
    for attempt in range(1, cfg.attempts):
        todo = [i for i, a in enumerate(answers) if not has_question(a, chunks[i], cfg)]
        if not todo:
            break
        sampling = params.llm.model_copy(update={"temperature": cfg.retry_temperature})
        generate.configure(sampling, params.seed + attempt)
        asked = [prompts[i] for i in todo]
        again, cost = answer_split(f"{split} retry {attempt}", asked, generate, cache)
        spent += cost
        for i, answer in zip(todo, again, strict=True):
            retried.add(i)
            if has_question(answer, chunks[i], cfg):
                answers[i] = answer
                recovered += 1
    generate.configure(params.llm, params.seed)
    return len(retried), recovered, spent


def ask_more(split, chunks, answers, generate, cache, cfg: SynthConfig) -> tuple:
    """The keyword prompt's answers (None when `synth.keyword_queries` is 0) and the judge's
    (None without `synth.judge`), cached like the questions.

    Returns:
        Keyword answers, verdicts, and what asking them cost (`Spent`).
    """
    keyword_answers = verdicts = None
    spent = Spent()
    if cfg.keyword_queries:
        asked = [build_prompt(cfg.keyword_prompt, c["text"], cfg.keyword_queries) for c in chunks]
        keyword_answers, cost = answer_split(f"{split} keywords", asked, generate, cache)
        spent += cost
    if cfg.judge is not None:
        targets = judge_targets(chunks, answers, keyword_answers, cfg)
        asked = [build_judge_prompt(cfg.judge.prompt, c["text"], q) for c, q in targets]
        judged, cost = answer_split(f"{split} judge", asked, generate, cache)
        verdicts = {(c["id"], q): a for (c, q), a in zip(targets, judged, strict=True)}
        spent += cost
    return keyword_answers, verdicts, spent


def synth_split(split: str, chunks: list[dict], generate: LazyChat, cache, params) -> tuple:
    """Ask, retry, ask for keyword queries and judge as configured; assemble the dataset."""
    cfg = params.synth
    template = resolve_prompt(cfg.prompt)
    prompts = [build_prompt(template, c["text"], cfg.num_questions) for c in chunks]
    answers, spent = answer_split(split, prompts, generate, cache)
    retried, recovered, retry_spent = retry_unanswered(
        split, chunks, prompts, answers, generate, params, cache
    )
    keyword_answers, verdicts, more = ask_more(split, chunks, answers, generate, cache, cfg)
    dataset, stats = synthesize(chunks, answers, cfg, keyword_answers, verdicts)
    spent += retry_spent + more
    stats.cached_answers, stats.cache_damaged = spent.cached, spent.damaged
    stats.fresh_answers, stats.fresh_tokens = spent.asked, spent.tokens
    stats.seconds = spent.seconds
    stats.retried_chunks, stats.recovered_chunks = retried, recovered
    return dataset, stats


def previous_metrics(path: Path) -> dict:
    """The metrics file a former run left, or {} (none, or not a JSON object)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def keep_run_figures(metrics: dict, idle: set[str], previous: dict) -> dict:
    """`metrics`, where each split in `idle` (nothing asked of the LLM) keeps its `previous`
    entry if that differs only in `SynthStats.RUN_FIGURES`: timing and cache hits describe the
    run that generated the answers, and a fully cached rerun must not change the file DVC
    tracks."""

    def of_inputs(entry: dict) -> dict:
        return {k: v for k, v in entry.items() if k not in SynthStats.RUN_FIGURES}

    kept = dict(metrics)
    for split in idle:
        old = previous.get(split)
        if isinstance(old, dict) and of_inputs(old) == of_inputs(metrics[split]):
            kept[split] = old
    return kept


def summary(split: str, stats: SynthStats) -> str:
    damaged = f", {stats.cache_damaged} damaged" if stats.cache_damaged else ""
    return (
        f"{split:<10} {stats.chunks:>5} chunks ({stats.cached_answers} cached{damaged}) -> "
        f"{stats.questions:>5} questions, {len(stats.failures)} failed chunks"
    )


def main() -> None:
    params = load_params(PARAMS)
    cache = AnswerCache(default_cache_dir())
    generate = LazyChat(params)
    metrics, failures, idle = {}, {}, set()
    for split in io.SPLITS:
        chunks = io.read_jsonl(io.CHUNKS_DIR / f"{split}.jsonl")[: params.synth.max_chunks]
        dataset, stats = synth_split(split, chunks, generate, cache, params)
        metrics[split], failures[split] = stats.as_dict(), stats.failures
        if not stats.fresh_answers:
            idle.add(split)
        print(summary(split, stats))
        check_failure_rate(split, stats, params.synth)
        io.write_json(io.QA_DIR / f"{split}.json", dataset)
    io.write_json(io.QA_DIR / "failures.json", failures)
    metrics = keep_run_figures(metrics, idle, previous_metrics(METRICS_FILE))
    io.write_json(METRICS_FILE, metrics)


if __name__ == "__main__":
    run_stage("synth", main)
