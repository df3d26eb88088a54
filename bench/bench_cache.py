"""The synth answer cache at scale: one answer per chunk, written, then read back in one pass.

Usage: python bench/bench_cache.py [--entries 100000] [--folder DIR]

Writes `--entries` answers through `AnswerCache.put` (as `synth` does after each batch), then
runs `answer_all` over the same prompts with a generator that fails if it is ever called: the
pass a re-run of `synth` makes when every chunk is cached. Prints entries per second for both
and the cache's size on disk; the last line is
`cache: entries=N write_s=W hit_s=H hit_us_per_entry=U`.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from embedtune.synth.llm.answers import AnswerCache, answer_all
from embedtune.synth.llm.base import Generation


def key_of(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


def never(batch: list[str]) -> list[Generation]:
    raise AssertionError("a fully cached pass generated an answer")


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.json"))


def run(entries: int, folder: Path) -> None:
    cache = AnswerCache(folder)
    prompts = [f"Write 2 questions about chunk {i}: the text of chunk {i}." for i in range(entries)]
    answer = Generation("What does this chunk say?\nWhy does it matter?", 14)
    started = time.perf_counter()
    for prompt in prompts:
        cache.put(key_of(prompt), answer)
    write_s = time.perf_counter() - started
    print(f"write  {entries} entries in {write_s:.1f} s ({entries / write_s:,.0f}/s)")
    started = time.perf_counter()
    results, reused = answer_all(prompts, never, 16, key_of, AnswerCache(folder))
    hit_s = time.perf_counter() - started
    assert reused == entries and results[0] == answer
    print(f"hit    {entries} entries in {hit_s:.1f} s ({entries / hit_s:,.0f}/s)")
    print(
        f"disk   {disk_bytes(folder) / 1e6:.1f} MB of JSON in {len(list(folder.iterdir()))} shards"
    )
    per = hit_s / entries * 1e6
    times = f"write_s={write_s:.1f} hit_s={hit_s:.1f} hit_us_per_entry={per:.0f}"
    print(f"cache: entries={entries} {times}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument(
        "--folder", type=Path, help="where the cache is written (default: a temp dir)"
    )
    args = parser.parse_args()
    if args.folder:
        run(args.entries, args.folder)
    else:
        with tempfile.TemporaryDirectory(prefix="embedtune-bench-cache-") as folder:
            run(args.entries, Path(folder))


if __name__ == "__main__":
    main()
