"""The CUDA paths of the pipeline in one run on the device machine, as one JSON of figures.

    prepare (here, CPU):  python bench/gpu_check.py prepare .device-inputs
    run (device, GPU):    python bench/gpu_check.py run .device-inputs --out $OUT/gpu_check.json
    smoke test (CPU):     python bench/gpu_check.py run .device-inputs --tiny --out /tmp/g.json

Runs our code, with models of the real shapes and random weights built on the device (no
weights travel; speed does not depend on their values):
- synth: `bench/gpu_synth.py`, the `transformers` backend in 4-bit NF4 on a zephyr-7b-beta
  shaped model, batched (`answer_all`) vs one call per chunk; tokens/s and the ratio.
- embed: `load_encoder` + `embed_texts` on a GIST-large shaped encoder (BERT, 24 layers, 1024
  wide, CLS pooling) in float16 vs float32: texts/s and the cosine agreement of the vectors.
- full: the `full` method's `train` (sentence-transformers' trainer) with bf16 mixed precision at
  the recipe's batch size, and with CachedMNRL at batch 256: optimiser steps/s.
- adapter: the `adapter_linear` method's `train` on the base embeddings: seconds.
Peak GPU memory for each. A part that fails is recorded with its error and the rest still run.
`prepare` writes what `run` needs without Hydra, LlamaIndex or the network: gpu_synth's prompts,
tokenizer and `llm` section, the recipe's `embed` and `train` sections (composed from conf/),
a BERT tokenizer and 1,024 (question, passage) pairs cut from the cpu preset's chunks.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import gpu_synth  # noqa: E402 (a sibling script)

ROOT = Path(__file__).resolve().parents[1]
SECTIONS, PAIRS, ENCODER_TOKENIZER = "sections.json", "pairs.json", "encoder-tokenizer"
GIST_LARGE_SHAPE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16}
GIST_LARGE_SHAPE["intermediate_size"] = 4096
TINY_ENCODER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
TINY_ENCODER["intermediate_size"] = 64


def prepare(folder: Path, pairs: int, chunks: int) -> None:
    from transformers import AutoTokenizer

    from embedtune.compose import composed_params
    from embedtune.weights import resolve_model

    gpu_synth.prepare(folder, chunks)
    sections = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in {
            "full": ["train=full"],
            "cached": ["train=full", "train/loss=cached_mnrl"],
            "adapter": ["train=adapter_linear"],
        }.items():
            params = composed_params(overrides, Path(tmp))
            sections[name] = params.train.model_dump()
            sections["embed"] = params.embed.model_dump()
        cpu = composed_params(["experiment=cpu"], Path(tmp))
        chunks = gpu_synth_chunks(cpu, Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(cpu.embed.model, "embed.model"))
    tokenizer.save_pretrained(folder / ENCODER_TOKENIZER)
    (folder / SECTIONS).write_text(json.dumps(sections, indent=1))
    (folder / PAIRS).write_text(json.dumps(passage_pairs(chunks, pairs)))
    print(f"sections, encoder tokenizer and {pairs} pairs written to {folder}")


def gpu_synth_chunks(params, workdir: Path) -> list[str]:
    from bench_synth import benchmark_chunks

    return [c["text"] for c in benchmark_chunks(params, 10_000, workdir)]


def passage_pairs(chunks: list[str], count: int) -> list[list[str]]:
    """Distinct 64-word windows (stride 16) with 10 of their words as the question."""
    pairs = []
    for text in chunks:
        words = text.split()
        for start in range(0, max(1, len(words) - 64), 16):
            window = words[start : start + 64]
            pairs.append([" ".join(window[20:30]), " ".join(window)])
    return pairs[:count]


def build_encoder(inputs: Path, shape: dict, out: Path) -> Path:
    """A sentence-transformers folder: a random BERT of `shape`, CLS pooling, normalised."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(inputs / ENCODER_TOKENIZER)
    torch.manual_seed(0)
    BertModel(BertConfig(**shape, vocab_size=len(tokenizer))).save_pretrained(out / "bert")
    tokenizer.save_pretrained(out / "bert")
    bert = models.Transformer(str(out / "bert"), max_seq_length=512)
    pooling = models.Pooling(shape["hidden_size"], pooling_mode="cls")
    SentenceTransformer(modules=[bert, pooling, models.Normalize()]).save(str(out / "st"))
    return out / "st"


def peak_gib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return round(peak, 2)


def synchronized_seconds(started: float) -> float:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def check_embed(encoder: Path, embed: dict, pairs: list, device: str) -> dict:
    from embedtune.config import EmbedConfig
    from embedtune.embeddings import embed_texts, load_encoder

    passages, figures, vectors = [p for _, p in pairs], {}, {}
    for dtype in ("float32", "float16" if device == "cuda" else "bfloat16"):
        cfg = EmbedConfig(**{**embed, "model": str(encoder), "device": device, "dtype": dtype})
        model = load_encoder(cfg)
        embed_texts(model, passages[:64], cfg.document_prefix, cfg.batch_size)  # warm-up
        started = time.perf_counter()
        vectors[dtype] = embed_texts(model, passages, cfg.document_prefix, cfg.batch_size)
        seconds = synchronized_seconds(started)
        figures[dtype] = {"texts_per_s": len(passages) / seconds, "peak_gib": peak_gib()}
        del model
    full, half = vectors.values()
    cosine = (full * half).sum(dim=1)
    figures["cosine_agreement"] = {"min": float(cosine.min()), "mean": float(cosine.mean())}
    figures["ratio"] = figures[list(vectors)[1]]["texts_per_s"] / figures["float32"]["texts_per_s"]
    return figures


def dataset_of(pairs: list) -> dict:
    return {
        "queries": {f"q{i}": q for i, (q, _) in enumerate(pairs)},
        "corpus": {f"c{i}": p for i, (_, p) in enumerate(pairs)},
        "relevant_docs": {f"q{i}": [f"c{i}"] for i in range(len(pairs))},
    }


def check_training(method: str, section: dict, inputs, batch_size: int | None = None) -> dict:
    """Seconds and optimiser steps/s of one epoch of `method`'s own `train`."""
    from embedtune.train.methods.base import TrainingLog, get_method

    changes = {"epochs": 1, "holdout_fraction": 0.0, "holdout_min_questions": 0, "patience": 0}
    if batch_size:
        changes["batch_size"] = batch_size
    cfg = get_method(method).Config.model_validate({**section, **changes})
    stamps: list[float] = []
    log = TrainingLog(step=lambda step, loss: stamps.append(time.perf_counter()))
    started = time.perf_counter()
    get_method(method).train(inputs, cfg, 0, log)
    seconds = synchronized_seconds(started)
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None
    return {"batch_size": cfg.batch_size, "steps": len(stamps), "steps_per_s": rate,
            "seconds": seconds, "peak_gib": peak_gib()}  # fmt: skip


def part(figures: dict, name: str, measure) -> None:
    """Run one measurement; a failure is recorded, not raised, so the other parts still run."""
    print(f"--- {name}", flush=True)
    try:
        figures[name] = measure()
    except Exception as err:  # noqa: BLE001 (the device run must report every part)
        traceback.print_exc()
        figures[name] = {"error": f"{type(err).__name__}: {err}"}
    print(json.dumps(figures[name], indent=1), flush=True)


def run(inputs: Path, args: argparse.Namespace) -> dict:
    import torch

    from embedtune.config import EmbedConfig
    from embedtune.embeddings import SplitEmbeddings, embed_texts, load_encoder
    from embedtune.train.methods.base import TrainingInputs

    device = "cpu" if args.tiny else "cuda"
    sections = json.loads((inputs / SECTIONS).read_text())
    pairs = json.loads((inputs / PAIRS).read_text())[: 64 if args.tiny else None]
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    figures: dict = {"device": name, "torch": torch.__version__, "tiny": args.tiny}
    part(figures, "synth", lambda: gpu_synth.run(inputs, args))
    with tempfile.TemporaryDirectory(prefix="gist-large-shaped-") as tmp:
        encoder = build_encoder(inputs, TINY_ENCODER if args.tiny else GIST_LARGE_SHAPE, Path(tmp))
        part(figures, "embed", lambda: check_embed(encoder, sections["embed"], pairs, device))
        embed = EmbedConfig(
            **{**sections["embed"], "model": str(encoder), "device": device, "dtype": "bfloat16"}
        )  # the full fine-tune trains in bf16 mixed precision; float32 weights
        dataset = dataset_of(pairs)
        full = TrainingInputs(dataset, embed)
        part(figures, "full_bf16", lambda: check_training("full", sections["full"], full))
        big = 32 if args.tiny else 256
        cached = TrainingInputs(dataset, embed)
        part(figures, f"full_cached_mnrl_{big}",
             lambda: check_training("full", sections["cached"], cached, big))  # fmt: skip

        def adapter() -> dict:
            model = load_encoder(embed.model_copy(update={"dtype": "float32"}))
            ids, texts = list(dataset["queries"]), list(dataset["queries"].values())
            cids, ctexts = list(dataset["corpus"]), list(dataset["corpus"].values())
            emb = SplitEmbeddings(
                ids, embed_texts(model, texts, embed.query_prefix, embed.batch_size),
                cids, embed_texts(model, ctexts, embed.document_prefix, embed.batch_size),
            )  # fmt: skip
            inputs_ = TrainingInputs(dataset, embed, _embeddings=emb)
            return check_training("adapter_linear", sections["adapter"], inputs_)

        part(figures, "adapter", adapter)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="write what `run` needs (on this machine)")
    prep.add_argument("folder", type=Path)
    prep.add_argument("--pairs", type=int, default=1024)
    prep.add_argument("--chunks", type=int, default=96, help="synth prompts")
    go = sub.add_parser("run", help="measure every part (on the GPU machine)")
    go.add_argument("folder", type=Path)
    go.add_argument("--out", type=Path, required=True, help="the JSON of figures")
    gpu_synth.add_run_options(go)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.folder, args.pairs, args.chunks)
        return
    started = time.perf_counter()
    figures = run(args.folder, args)
    figures["total_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"figures written to {args.out} ({figures['total_s']} s)")


if __name__ == "__main__":
    main()
