"""Stage `embed`: frozen base-model embeddings of every query and chunk, computed once.

Usage: python -m embedtune.embed   (reads params.yaml; run by `dvc repro`)

Writes data/embeddings/<split>.safetensors with tensors `queries` and `corpus` (L2-normalised
float32 rows, whatever `embed.dtype` the model ran in) and, in its metadata, the ids of the rows
in order. `train` and `eval` read these, so changing a training parameter never re-embeds
anything.

Each block of `BlockStore.BLOCK_TEXTS` texts is written to `<cache>/embed-resume/` as soon as it
is encoded, so a killed run resumes where it stopped; the folder is removed once both splits
are written. With `embed.devices`, sentence-transformers' multi-process pool encodes on those
devices (one process each).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from embedtune import io, progress
from embedtune.config import EmbedConfig, load_params
from embedtune.embeddings import BlockStore, embed_dataset, load_encoder, save_embeddings
from embedtune.stage import run_stage

PARAMS = {"embed": EmbedConfig}


def main() -> None:
    params = load_params(PARAMS)
    datasets = {split: io.load_qa(split) for split in io.SPLITS}  # fail before loading the model
    encoder = load_encoder(params.embed)
    folder = resume_folder(params.embed, str(encoder.device), str(encoder.dtype))
    with encoding_pool(encoder, params.embed.devices) as pool:
        blocks = BlockStore(encoder, params.embed.batch_size, folder, pool)
        for split, dataset in datasets.items():
            texts = len(dataset["queries"]) + len(dataset["corpus"])
            with progress.task(f"embed {split}", texts, "texts"):  # a line per block of texts
                emb = embed_dataset(encoder, dataset, params.embed, blocks)
            save_embeddings(io.EMBEDDINGS_DIR / f"{split}.safetensors", emb)
            print(
                f"{split:<10} {len(emb.query_ids):>5} queries, {len(emb.corpus_ids):>5} chunks, "
                f"dim {emb.corpus.shape[1]}"
            )
    if blocks.reused:
        print(f"resumed: {blocks.reused} blocks read back from {folder}")
    shutil.rmtree(folder, ignore_errors=True)


def resume_folder(embed: EmbedConfig, device: str, dtype: str) -> Path:
    """This checkout's blocks of one model in one dtype on one kind of device (the numerics
    differ by each)."""
    what = [str(Path.cwd().resolve()), embed.model, embed.dtype, device.split(":")[0], dtype]
    key = hashlib.sha256(json.dumps(what).encode("utf-8")).hexdigest()[:16]
    return io.cache_root() / "embed-resume" / key


@contextmanager
def encoding_pool(encoder, devices: list[str] | None):
    """sentence-transformers' multi-process pool on `devices` (None: no pool), stopped after."""
    if not devices:
        yield None
        return
    # Stopping terminates the pool's processes, so the folder Python's multiprocessing makes in
    # each (pymp-*, for the tensors they send back) would stay in the temporary folder: they
    # get one of ours instead, removed once the pool has stopped.
    with tempfile.TemporaryDirectory(prefix="embedtune-pool-") as scratch:
        before = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = scratch  # read by each process as it starts
        try:
            pool = encoder.start_multi_process_pool(devices)
        finally:
            if before is None:
                del os.environ["TMPDIR"]
            else:
                os.environ["TMPDIR"] = before
        try:
            yield pool
        finally:
            encoder.stop_multi_process_pool(pool)


if __name__ == "__main__":
    run_stage("embed", main)
