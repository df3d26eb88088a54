"""Getting one LLM answer per prompt: batched, cached by content, and failing per batch.

The cache makes `synth` incremental and crash-safe: every finished batch is stored at once under
a key derived from everything that determines the answer (model, generation settings, full
prompt), so a killed run resumes where it stopped and a new document only costs its own chunks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from embedtune import io
from embedtune.llm.base import Failure, Generation, LLMConfig

Generate = Callable[[list[str]], list[Generation | Failure]]


def default_cache_dir() -> Path:
    """`$EMBEDTUNE_CACHE_DIR/synth`, else `~/.cache/embedtune/synth` (shared by all checkouts)."""
    return io.cache_root() / "synth"


def answer_key(llm: LLMConfig, seed: int, prompt: str) -> str:
    """Content address of one answer: every key of the backend's config except the ones it
    declares speed-only, the seed when sampling, and the full prompt."""
    shaping = llm.model_dump(exclude=set(llm.not_in_answer_key))
    shaping["seed"] = seed if llm.temperature > 0 else None
    shaping["prompt"] = prompt
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()


class AnswerCache:
    """One small JSON file per answer, written atomically; safe to share between processes."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> Generation | None:
        try:
            return Generation(**json.loads(self._path(key).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def put(self, key: str, generation: Generation) -> None:
        io.write_json(self._path(key), asdict(generation))


def halve_on_oom(generate: Generate) -> Generate:
    """Wrap `generate` so a CUDA out-of-memory error halves the batch and tries again."""

    def generate_halving(prompts: list[str]) -> list[Generation | Failure]:
        import torch

        try:
            return generate(prompts)
        except torch.cuda.OutOfMemoryError:
            if len(prompts) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(prompts) // 2
            return generate_halving(prompts[:half]) + generate_halving(prompts[half:])

    return generate_halving


def answer_all(
    prompts: list[str],
    generate: Generate,
    batch_size: int,
    key_of: Callable[[str], str],
    cache: AnswerCache | None = None,
    on_batch: Callable[[list[Generation | Failure]], None] = lambda results: None,
    prepare: Callable[[], None] = lambda: None,
) -> tuple[list[Generation | Failure], int]:
    """Answer every prompt, longest first in batches, reusing cached answers.

    `prepare` runs once before the first generation (loading a model), and only when some
    prompt is not cached; its errors stop everything. A batch that raises becomes one `Failure`
    per prompt (not cached, so a rerun retries it).

    Returns:
        The answers in input order, and how many came from the cache.
    """
    keys = [key_of(p) for p in prompts]
    results: list[Generation | Failure | None] = [cache.get(k) if cache else None for k in keys]
    reused = sum(r is not None for r in results)
    todo = sorted((i for i, r in enumerate(results) if r is None), key=lambda i: -len(prompts[i]))
    if todo:
        prepare()
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        try:
            answers: list[Generation | Failure] = generate([prompts[i] for i in batch])
        except Exception as err:  # noqa: BLE001 - recorded per chunk; the stage decides to fail
            reason = f"generation_error: {type(err).__name__}: {str(err).strip()}".splitlines()[0]
            answers = [Failure(reason[:200])] * len(batch)
        for i, answer in zip(batch, answers, strict=True):
            results[i] = answer
            if cache and isinstance(answer, Generation):
                cache.put(keys[i], answer)
        on_batch(answers)
    return results, reused
