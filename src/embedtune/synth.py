"""Stage `synth`: a local LLM writes questions for each chunk; the result is a QA dataset.

Usage: python -m embedtune.synth   (reads params.yaml; run by `dvc repro`)

Writes data/qa/<split>.json in LlamaIndex's `EmbeddingQAFinetuneDataset` layout (`queries`,
`corpus`, `relevant_docs`, `mode`), loadable with `EmbeddingQAFinetuneDataset.from_json`,
data/qa/failures.json (chunks without a question, with the reason), and metrics/synth.json.
With `synth.keyword_queries`, a second prompt per chunk asks for short keyword queries; with
`synth.judge`, the same LLM scores every kept query and low scores are dropped. All answers are
cached by content (see `embedtune.llm.answers`): a killed run resumes, a rerun asks nothing, and
a new document only costs its own chunks.
"""

from __future__ import annotations

import time

from embedtune import io
from embedtune.config import SynthConfig, load_params
from embedtune.errors import run_stage
from embedtune.llm.answers import (
    AnswerCache,
    answer_all,
    answer_key,
    default_cache_dir,
    halve_on_oom,
)
from embedtune.llm.base import Generation, backend_config, make_chat
from embedtune.qa import (
    build_judge_prompt,
    build_prompt,
    check_failure_rate,
    has_question,
    judge_targets,
    resolve_prompt,
    synthesize,
)

PARAMS = {"seed": int, "llm": backend_config, "synth": SynthConfig}


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
    """Answer one split's prompts with a rich progress bar (chunks, tokens/s, ETA).

    Returns:
        The answers, how many came from the cache, tokens generated now, and seconds spent.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn(f"synth {split}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks"),
        TextColumn("{task.fields[rate]:>6.1f} tokens/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    started = time.perf_counter()
    tokens = 0
    with Progress(*columns) as progress:
        task = progress.add_task(split, total=len(prompts), rate=0.0)

        def on_batch(answers: list) -> None:
            nonlocal tokens
            tokens += sum(a.new_tokens for a in answers if isinstance(a, Generation))
            rate = tokens / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=len(answers), rate=rate)

        answers, reused = answer_all(
            prompts,
            generate,
            generate.llm.batch_size,
            lambda p: answer_key(generate.llm, generate.seed, p),
            cache,
            on_batch,
            generate.load,
        )
        progress.update(task, completed=len(prompts))
    return answers, reused, tokens, time.perf_counter() - started


def retry_unanswered(split, chunks, prompts, answers, generate, params, cache) -> tuple[int, int]:
    """Ask again, with seeded sampling, the chunks whose answer gave no valid question, up to
    `synth.attempts` answers per chunk; a retry's answer replaces the first only when it holds a
    question. Retries are cached like any answer (the seed is part of their key).

    Returns:
        How many chunks were asked again, and how many of them got a question.
    """
    cfg = params.synth
    retried: set[int] = set()
    recovered = 0
    for attempt in range(1, cfg.attempts):
        todo = [i for i, a in enumerate(answers) if not has_question(a, chunks[i], cfg)]
        if not todo:
            break
        sampling = params.llm.model_copy(update={"temperature": cfg.retry_temperature})
        generate.configure(sampling, params.seed + attempt)
        asked = [prompts[i] for i in todo]
        again, *_ = answer_split(f"{split} retry {attempt}", asked, generate, cache)
        for i, answer in zip(todo, again, strict=True):
            retried.add(i)
            if has_question(answer, chunks[i], cfg):
                answers[i] = answer
                recovered += 1
    generate.configure(params.llm, params.seed)
    return len(retried), recovered


def ask_more(split, chunks, answers, generate, cache, cfg: SynthConfig) -> tuple:
    """The keyword prompt's answers (None when `synth.keyword_queries` is 0) and the judge's
    (None without `synth.judge`), cached like the questions.

    Returns:
        Keyword answers, verdicts, and what asking them cost: cached answers, tokens, seconds.
    """
    keyword_answers = verdicts = None
    spent = [0, 0, 0.0]
    if cfg.keyword_queries:
        asked = [build_prompt(cfg.keyword_prompt, c["text"], cfg.keyword_queries) for c in chunks]
        keyword_answers, *cost = answer_split(f"{split} keywords", asked, generate, cache)
        spent = [a + b for a, b in zip(spent, cost, strict=True)]
    if cfg.judge is not None:
        targets = judge_targets(chunks, answers, keyword_answers, cfg)
        asked = [build_judge_prompt(cfg.judge.prompt, c["text"], q) for c, q in targets]
        judged, *cost = answer_split(f"{split} judge", asked, generate, cache)
        verdicts = {(c["id"], q): a for (c, q), a in zip(targets, judged, strict=True)}
        spent = [a + b for a, b in zip(spent, cost, strict=True)]
    return keyword_answers, verdicts, spent


def synth_split(split: str, chunks: list[dict], generate: LazyChat, cache, params) -> tuple:
    """Ask, retry, ask for keyword queries and judge as configured; assemble the dataset."""
    cfg = params.synth
    template = resolve_prompt(cfg.prompt)
    prompts = [build_prompt(template, c["text"], cfg.num_questions) for c in chunks]
    answers, reused, tokens, seconds = answer_split(split, prompts, generate, cache)
    retried = retry_unanswered(split, chunks, prompts, answers, generate, params, cache)
    keyword_answers, verdicts, more = ask_more(split, chunks, answers, generate, cache, cfg)
    dataset, stats = synthesize(chunks, answers, cfg, keyword_answers, verdicts)
    stats.cached_answers, stats.fresh_tokens = reused + more[0], tokens + more[1]
    stats.seconds = seconds + more[2]
    stats.retried_chunks, stats.recovered_chunks = retried
    return dataset, stats


def main() -> None:
    params = load_params(PARAMS)
    cache = AnswerCache(default_cache_dir())
    generate = LazyChat(params)
    metrics, failures = {}, {}
    for split in io.SPLITS:
        chunks = io.read_jsonl(io.CHUNKS_DIR / f"{split}.jsonl")[: params.synth.max_chunks]
        dataset, stats = synth_split(split, chunks, generate, cache, params)
        metrics[split], failures[split] = stats.as_dict(), stats.failures
        print(
            f"{split:<10} {stats.chunks:>5} chunks ({stats.cached_answers} cached) -> "
            f"{stats.questions:>5} questions, {len(stats.failures)} failed chunks"
        )
        check_failure_rate(split, stats, params.synth)
        io.write_json(io.QA_DIR / f"{split}.json", dataset)
    io.write_json(io.QA_DIR / "failures.json", failures)
    io.write_json(io.METRICS_DIR / "synth.json", metrics)


if __name__ == "__main__":
    run_stage("synth", main)
