"""Adapter training: ours against LlamaIndex's `EmbeddingAdapterFinetuneEngine`.

Usage: python bench/bench_train.py [--epochs 4] [--batch-size 10] [--chunks 120] [--dataset PATH]
                                   [--dtype float32|bfloat16]

Same base model (the offline all-MiniLM-L6-v2, one loaded instance, wrapped as LlamaIndex's
`HuggingFaceEmbedding`), same questions and chunks, same epochs and batch size, a linear adapter
with bias on both sides. Timed end to end, embedding included: ours embeds every text once in
batches (the `embed` stage's code) and trains on the cached embeddings (the `train` stage's code,
held-out selection included); the reference embeds each question and its chunk one call at a
time in every batch of every epoch. The dataset is data/qa/train.json when it exists, else a
deterministic one from the Python reference that ships with CPython (chunks of the text, two
questions per chunk as in the recipe, made from its first words: fine for timing, not for
quality).
Prints both times and, last, `speedup=<reference seconds / ours>`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from embedtune.compose import composed_params
from embedtune.config import EmbedConfig
from embedtune.embeddings import embed_dataset
from embedtune.train.methods.base import TrainingInputs, TrainingLog, get_method
from embedtune.train.methods.linear import LinearConfig
from embedtune.weights import encoder_dtype, resolve_model

QA_FILE = Path("data/qa/train.json")


def synthetic_dataset(chunks: int, words: int = 150, per_chunk: int = 2) -> dict:
    """Chunks of `words` words from the Python reference; `per_chunk` questions per chunk (the
    recipe's 2), each made from the next 20 words of the chunk."""
    import pydoc_data.topics

    text = " ".join(pydoc_data.topics.topics[t] for t in sorted(pydoc_data.topics.topics))
    tokens = text.split()
    dataset: dict = {"queries": {}, "corpus": {}, "relevant_docs": {}}
    for i in range(min(chunks, len(tokens) // words)):
        chunk = " ".join(tokens[i * words : (i + 1) * words])
        dataset["corpus"][f"chunk-{i}"] = chunk
        for n in range(per_chunk):
            span = tokens[i * words + n * 20 : i * words + (n + 1) * 20]
            question = "What does the reference mean by: " + " ".join(span) + "?"
            dataset["queries"][f"question-{i}-{n}"] = question
            dataset["relevant_docs"][f"question-{i}-{n}"] = [f"chunk-{i}"]
    return dataset


def load_benchmark_dataset(path: Path | None, chunks: int) -> tuple[dict, str]:
    if path is not None and path.is_file():
        return json.loads(path.read_text()), str(path)
    return synthetic_dataset(chunks), f"synthetic from pydoc_data.topics ({chunks} chunks)"


def configs(epochs: int, batch_size: int, dtype: str) -> tuple[LinearConfig, EmbedConfig]:
    """The cpu preset's linear adapter and base model (conf/), with the benchmark's settings."""
    with tempfile.TemporaryDirectory(prefix="bench-train-params-") as folder:
        params = composed_params(["experiment=cpu", "train=adapter_linear_cpu"], Path(folder))

    def updated(section, **updates):
        return type(section).model_validate({**section.model_dump(), **updates}, strict=True)

    train = updated(params.train, epochs=epochs, batch_size=batch_size, bias=True)
    return train, updated(params.embed, batch_size=32, device="cpu", dtype=dtype)


def run_ours(encoder, dataset: dict, cfg: LinearConfig, embed: EmbedConfig) -> dict[str, float]:
    started = time.perf_counter()
    emb = embed_dataset(encoder, dataset, embed)
    embedded = time.perf_counter()
    inputs = TrainingInputs(dataset, embed, _embeddings=emb, _encoder=encoder)
    get_method(cfg.method).train(inputs, cfg, 42, TrainingLog())
    finished = time.perf_counter()
    return {"embed": embedded - started, "train": finished - embedded, "total": finished - started}


def run_reference(llama_embed, dataset: dict, cfg: LinearConfig, workdir: Path) -> float:
    from llama_index.finetuning import EmbeddingAdapterFinetuneEngine
    from llama_index.finetuning.embeddings.common import EmbeddingQAFinetuneDataset

    started = time.perf_counter()
    engine = EmbeddingAdapterFinetuneEngine(
        EmbeddingQAFinetuneDataset(**dataset),
        llama_embed,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        bias=cfg.bias,
        device="cpu",
        model_output_path=str(workdir / "reference"),  # it saves with torch.save: keep it out
        verbose=False,
        optimizer_params={"lr": cfg.lr},
        show_progress_bar=False,
    )
    engine.finetune()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--chunks", type=int, default=120, help="synthetic dataset size")
    parser.add_argument("--dataset", type=Path, default=QA_FILE, help="an EmbeddingQA json")
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"], help="model dtype, both"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    dataset, source = load_benchmark_dataset(args.dataset, args.chunks)
    cfg, embed = configs(args.epochs, args.batch_size, args.dtype)
    llama_embed = HuggingFaceEmbedding(
        model_name=resolve_model(embed.model, "embed.model"),
        device="cpu",
        model_kwargs={"dtype": encoder_dtype(args.dtype, "cpu")},
    )
    encoder = llama_embed._model  # one loaded SentenceTransformer for both
    encoder.encode(["warm up"], show_progress_bar=False)
    print(
        f"dataset: {source}: {len(dataset['queries'])} questions, {len(dataset['corpus'])} "
        f"chunks; epochs {cfg.epochs}, batch size {cfg.batch_size}, {args.dtype}; "
        f"load {os.getloadavg()[0]:.1f}"
    )
    ours = run_ours(encoder, dataset, cfg, embed)
    print(
        f"ours      {ours['total']:8.2f} s  (embed once {ours['embed']:.2f} s, "
        f"train on cached embeddings {ours['train']:.2f} s)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-train-") as workdir:
        reference = run_reference(llama_embed, dataset, cfg, Path(workdir))
    print(f"reference {reference:8.2f} s  (EmbeddingAdapterFinetuneEngine, finetune included)")
    print(f"speedup={reference / ours['total']:.1f}")


if __name__ == "__main__":
    main()
