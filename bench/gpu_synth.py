"""Question generation on a GPU in 4-bit: our batches against one call per chunk.

The device machine has no internet and takes at most 64 MiB along, so neither zephyr-7b-beta's
weights nor the offline SmolLM2 file can travel. This benchmark therefore times a model of
zephyr-7b-beta's exact shape (Mistral, 32 layers, 4096 wide, 8 KV heads) with random weights,
built on the device, saved, and loaded back through `TransformersChat` in 4-bit NF4 (bitsandbytes),
as the recipe loads zephyr. Speed does not depend on the weights' values: every answer runs to
`--max-new-tokens` (random weights almost never emit end-of-sequence), and both paths generate the
same number of tokens for the same prompts, which are real `cpu`-preset chunk prompts.

    prepare (here, CPU):  python bench/gpu_synth.py prepare .device-inputs
    run (device, GPU):    python bench/gpu_synth.py run .device-inputs
    smoke test (CPU):     python bench/gpu_synth.py run .device-inputs --tiny

`prepare` writes the prompts, SmolLM2's tokenizer (with its chat template) and the `cpu` preset's
`llm` section (composed from conf/) to a folder, so that `run` needs neither Hydra nor the
network; `run` reports tokens/s of the reference path (one `generate` call per chunk, which is what
LlamaIndex's `generate_qa_embedding_pairs` does; its thin LlamaIndex layer is not installed on
the device) and of ours (`answer_all`: sorted, padded batches), and ends with `speedup=<ratio>`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from embedtune.synth.llm.answers import answer_all, halve_on_oom
from embedtune.synth.llm.base import Generation
from embedtune.synth.llm.transformers_chat import TransformersChat, TransformersConfig

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = "prompts.json"
TOKENIZER = "tokenizer"
LLM = "llm.json"  # the cpu preset's llm section: every key a TransformersConfig needs
# HuggingFaceH4/zephyr-7b-beta's config.json (MistralForCausalLM), vocabulary aside.
ZEPHYR_SHAPE = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 32768,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "sliding_window": 4096,
}
TINY_SHAPE = {**ZEPHYR_SHAPE, "hidden_size": 64, "intermediate_size": 128}
TINY_SHAPE.update(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def prepare(folder: Path, chunks: int) -> None:
    """Write the cpu preset's first training prompts, SmolLM2's tokenizer and the preset's `llm`
    section into `folder`."""
    import sys

    from transformers import AutoTokenizer

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_synth import benchmark_chunks

    from embedtune.compose import composed_params
    from embedtune.synth.qa import build_prompt, resolve_prompt
    from embedtune.weights import resolve_model

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # the reference recipe's 2 questions per chunk (the cpu preset asks 3)
        overrides = ["experiment=cpu", "synth.num_questions=2"]
        params = composed_params(overrides, Path(tmp), ROOT / "conf")
        texts = [c["text"] for c in benchmark_chunks(params, chunks, Path(tmp))]
    synth = params.synth
    template = resolve_prompt(synth.prompt)
    prompts = [build_prompt(template, t, synth.num_questions) for t in texts]
    (folder / PROMPTS).write_text(json.dumps(prompts, indent=1))
    (folder / LLM).write_text(json.dumps(params.llm.model_dump(), indent=1))
    path = resolve_model(params.llm.model, "llm.model")
    tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=params.llm.gguf_file)
    tokenizer.save_pretrained(folder / TOKENIZER)
    print(f"{len(prompts)} prompts and the tokenizer written to {folder}")


def build_model(inputs: Path, shape: dict, device: str, out: Path) -> None:
    """Save a randomly initialised Mistral of `shape` with the prepared tokenizer into `out`."""
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(inputs / TOKENIZER)
    config = MistralConfig(
        **shape,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        dtype="bfloat16",
    )
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # 7B parameters: build them in bf16 (14.5 GB)
    try:
        with torch.device(device):
            model = MistralForCausalLM(config)
    finally:
        torch.set_default_dtype(torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def timed(generate, prompts: list[str]) -> tuple[float, int]:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    answers = generate(prompts)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    failed = [a for a in answers if not isinstance(a, Generation)]
    if failed:
        raise SystemExit(f"{len(failed)} prompts failed: {failed[0]}")
    return seconds, sum(a.new_tokens for a in answers)


def run(inputs: Path, args: argparse.Namespace) -> dict:
    """Time both paths, print them, and return the figures."""
    import torch

    prompts = json.loads((inputs / PROMPTS).read_text())
    device = "cpu" if args.tiny else "cuda"
    preset = json.loads((inputs / LLM).read_text())
    with tempfile.TemporaryDirectory(prefix="zephyr-shaped-") as tmp:
        settings = {
            "model": tmp,
            "gguf_file": None,  # the model built here is saved as safetensors
            "quantization": "none" if args.tiny else args.quantization,
            "dtype": "float32" if args.tiny else "bfloat16",
            "device": device,
            "max_new_tokens": args.max_new_tokens,
            "batch_size": args.batch_size,
            "compile": args.compile,
        }
        cfg = TransformersConfig.model_validate({**preset, **settings}, strict=True)
        started = time.perf_counter()
        build_model(inputs, TINY_SHAPE if args.tiny else ZEPHYR_SHAPE, device, Path(tmp))
        if device == "cuda":
            torch.cuda.empty_cache()
        chat = TransformersChat(cfg, seed=0).load()
        loaded = time.perf_counter() - started
        print(f"model built, saved and loaded ({cfg.quantization}) in {loaded:.0f} s")
    chat.generate(prompts[:2])  # warm-up, outside both timings

    reference = prompts[: args.reference_chunks]
    ref_s, ref_tokens = timed(lambda ps: [chat.generate([p])[0] for p in ps], reference)
    key = str  # every prompt is distinct; the answers are not cached here
    our_s, our_tokens = timed(
        lambda ps: answer_all(ps, halve_on_oom(chat.generate), args.batch_size, key)[0], prompts
    )
    ref_rate, our_rate = ref_tokens / ref_s, our_tokens / our_s
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(
        f"{name}, zephyr-7b-beta shape{' (tiny)' if args.tiny else ''}, {cfg.quantization}, "
        f"{cfg.max_new_tokens} new tokens per chunk, batch size {args.batch_size}, "
        f"compile {cfg.compile}"
    )
    print(
        f"reference, one call per chunk: {len(reference):4d} chunks {ref_s:7.1f} s "
        f"{ref_tokens:7d} tokens {ref_rate:8.1f} tokens/s"
    )
    print(
        f"embedtune batched:             {len(prompts):4d} chunks {our_s:7.1f} s "
        f"{our_tokens:7d} tokens {our_rate:8.1f} tokens/s"
    )
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    if peak is not None:
        print(f"peak GPU memory {peak:.1f} GiB")
    print(f"speedup={our_rate / ref_rate:.2f}")
    return {
        "device": name,
        "quantization": cfg.quantization,
        "load_s": round(loaded, 1),
        "reference": {"chunks": len(reference), "s": ref_s, "tokens": ref_tokens},
        "batched": {"chunks": len(prompts), "s": our_s, "tokens": our_tokens},
        "tokens_per_s": {"reference": ref_rate, "batched": our_rate},
        "speedup": our_rate / ref_rate,
        "peak_gib": peak,
    }


def add_run_options(go: argparse.ArgumentParser) -> None:
    go.add_argument("--batch-size", type=int, default=48)
    go.add_argument("--reference-chunks", type=int, default=16, help="timed one at a time")
    go.add_argument("--max-new-tokens", type=int, default=128)
    go.add_argument("--quantization", default="4bit", choices=["4bit", "8bit", "none"])
    go.add_argument("--compile", action="store_true", help="llm.compile=true (torch.compile)")
    go.add_argument("--tiny", action="store_true", help="a 2-layer model on the CPU (smoke test)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="write prompts and tokenizer (on this machine)")
    prep.add_argument("folder", type=Path)
    prep.add_argument("--chunks", type=int, default=96, help="the cpu preset has 103")
    go = sub.add_parser("run", help="time both paths (on the GPU machine)")
    go.add_argument("folder", type=Path)
    add_run_options(go)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.folder, args.chunks)
    else:
        run(args.folder, args)


if __name__ == "__main__":
    main()
