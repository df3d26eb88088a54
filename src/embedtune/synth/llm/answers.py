"""Getting one LLM answer per prompt: batched, cached by content, and failing per batch.

The cache makes `synth` incremental and crash-safe: every finished batch is stored at once under
a key derived from everything that determines the answer (model, generation settings, full
prompt), so a killed run resumes where it stopped and a new document only costs its own chunks.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from embedtune import io
from embedtune.errors import EmbedtuneError
from embedtune.synth.llm.base import Failure, Generation, LLMConfig

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
    """One small JSON file per answer, written atomically; safe to share between processes.

    A damaged entry (unreadable, not JSON, not a `Generation`'s fields and types, an empty folder
    in its place) is a miss, counted in `damaged`; the answer generated for it replaces it
    atomically. A folder with files in it where an entry belongs is never removed: reading it is
    one `EmbedtuneError` naming it.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.damaged = 0  # damaged entries read so far (each one a miss)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> Generation | None:
        path = self._path(key)
        try:
            if path.is_dir():
                return self._folder_in_place(path)
            generation = parse_generation(path.read_bytes()) if path.is_file() else None
        except OSError:  # unreadable, or gone since
            generation = None
        if generation is None and os.path.lexists(path):
            self.damaged += 1
        return generation

    def _folder_in_place(self, path: Path) -> None:
        if any(path.iterdir()):
            raise EmbedtuneError(
                f"{path} is a folder with files in it where the answer cache keeps one answer "
                "file: move that folder out of the cache and run again"
            )
        self.damaged += 1  # empty: `put` replaces it

    def put(self, key: str, generation: Generation) -> None:
        path = self._path(key)
        try:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()  # an empty folder read as damaged; rmdir refuses a full one
            io.write_json(path, asdict(generation))
        except OSError as err:
            raise EmbedtuneError(
                f"cannot write the answer cache file {path} ({err.strerror}): make "
                f"{self.folder} writable, or set {io.CACHE_ENV} to a writable folder"
            ) from None

    def check_writable(self, keys: list[str]) -> None:
        """Write a file for real in every folder that `keys` would be stored in (permission
        bits say nothing to root or on a read-only mount), so an unwritable cache is refused
        before an answer is generated that could not be kept."""
        for bucket in sorted({self._path(k).parent for k in keys}):
            try:
                bucket.mkdir(parents=True, exist_ok=True)
                fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=bucket)
                os.close(fd)
                os.unlink(probe)
            except OSError as err:
                missing = f"{len(keys)} answer{'s' * (len(keys) != 1)}"
                raise EmbedtuneError(
                    f"the answer cache cannot be written ({bucket}: {err.strerror}) and lacks "
                    f"{missing}: make {self.folder} writable, or set {io.CACHE_ENV} to a "
                    "writable folder"
                ) from None


# A cache file holds exactly a `Generation`'s fields, with these types (bool is no int here).
_FIELD_TYPES = {"text": str, "new_tokens": int}


def parse_generation(raw: bytes) -> Generation | None:
    """The `Generation` a cache file holds, or None when it holds anything else."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError:  # not UTF-8, not JSON
        return None
    if not isinstance(data, dict) or set(data) != set(_FIELD_TYPES):
        return None
    if any(type(data[name]) is not kind for name, kind in _FIELD_TYPES.items()):
        return None
    return Generation(**data) if data["new_tokens"] >= 0 else None


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
    prompt is not cached; its errors stop everything. A cache that cannot be written is refused
    just before it, so no answer is generated that could not be kept; a fully cached call only
    reads, so a read-only cache serves it. A batch that raises becomes one `Failure` per prompt
    (not cached, so a rerun retries it).

    Returns:
        The answers in input order, and how many came from the cache.
    """
    keys = [key_of(p) for p in prompts]
    results: list[Generation | Failure | None] = [cache.get(k) if cache else None for k in keys]
    reused = sum(r is not None for r in results)
    todo = sorted((i for i, r in enumerate(results) if r is None), key=lambda i: -len(prompts[i]))
    if todo:
        if cache:
            cache.check_writable([keys[i] for i in todo])
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
