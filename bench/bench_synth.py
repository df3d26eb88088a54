"""Question generation: our batched synth against LlamaIndex's `generate_qa_embedding_pairs`.

Usage: python bench/bench_synth.py [--chunks 48] [--batch-size 24] [--preset cpu] [OVERRIDE ...]

Same model (one loaded instance), same chunks, same prompt, same number of questions: the
reference calls the LLM once per chunk through a LlamaIndex LLM wrapper, ours generates in
padded batches. Prints tokens/s of each and, last, `speedup=<reference seconds / ours>`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from embedtune.chunk.splitting import split_documents
from embedtune.compose import composed_params
from embedtune.download.sources import download_all
from embedtune.reading.readers import read_documents
from embedtune.synth.llm.answers import answer_all, answer_key
from embedtune.synth.llm.base import Generation, make_chat
from embedtune.synth.qa import build_prompt, resolve_prompt

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def benchmark_chunks(params, count: int, workdir: Path) -> list[dict]:
    """The first `count` training chunks of the preset, produced by our download and chunk code."""
    download_all(params.data, workdir / "raw")
    documents = read_documents(workdir / "raw" / "train", params.chunk.extensions)
    return split_documents(documents, params.chunk)[:count]


def as_llamaindex_llm(chat, tokens: list[int]):
    """Wrap our loaded model as a LlamaIndex LLM that completes one prompt per call."""
    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
    from llama_index.core.llms.callbacks import llm_completion_callback

    class OneByOne(CustomLLM):
        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="bench")

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs) -> CompletionResponse:
            (generation,) = chat.generate([prompt])
            tokens.append(generation.new_tokens)
            return CompletionResponse(text=generation.text)

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs):
            raise NotImplementedError

    return OneByOne()


def run_reference(chat, chunks, template: str, num_questions: int, workdir: Path):
    from llama_index.core.schema import TextNode
    from llama_index.finetuning import generate_qa_embedding_pairs

    tokens: list[int] = []
    nodes = [TextNode(text=c["text"], id_=c["id"]) for c in chunks]
    reference_template = template.replace("{context}", "{context_str}").replace(
        "{num_questions}", "{num_questions_per_chunk}"
    )
    started = time.perf_counter()
    generate_qa_embedding_pairs(
        nodes,
        as_llamaindex_llm(chat, tokens),
        reference_template,
        num_questions,
        output_path=str(workdir / "reference.json"),
        verbose=False,
    )
    return time.perf_counter() - started, sum(tokens)


def run_ours(chat, chunks, params, batch_size: int):
    template = resolve_prompt(params.synth.prompt)
    prompts = [build_prompt(template, c["text"], params.synth.num_questions) for c in chunks]
    started = time.perf_counter()
    answers, _ = answer_all(
        prompts, chat.generate, batch_size, lambda p: answer_key(params.llm, params.seed, p)
    )
    seconds = time.perf_counter() - started
    return seconds, sum(a.new_tokens for a in answers if isinstance(a, Generation))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--preset", default="cpu", help="experiment preset (conf/experiment)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. llm.dtype=bfloat16")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        overrides = [f"experiment={args.preset}", *args.overrides]
        params = composed_params(overrides, workdir, CONF_DIR)
        chunks = benchmark_chunks(params, args.chunks, workdir)
        chat = make_chat(params.llm, params.seed).load()
        chat.generate(["Say hello."])  # warm-up, outside both timings
        template = resolve_prompt(params.synth.prompt)
        ref_s, ref_tokens = run_reference(
            chat, chunks, template, params.synth.num_questions, workdir
        )
        our_s, our_tokens = run_ours(chat, chunks, params, args.batch_size)

    gguf = getattr(params.llm, "gguf_file", None) or ""  # only the transformers backend has one
    print(
        f"model {params.llm.model} {gguf}, {len(chunks)} chunks, "
        f"{params.synth.num_questions} questions per chunk, batch size {args.batch_size}"
    )
    print(
        f"reference generate_qa_embedding_pairs: {ref_s:7.1f} s  {ref_tokens:6d} tokens  "
        f"{ref_tokens / ref_s:6.1f} tokens/s"
    )
    print(
        f"embedtune batched synth:               {our_s:7.1f} s  {our_tokens:6d} tokens  "
        f"{our_tokens / our_s:6.1f} tokens/s"
    )
    print(f"speedup={ref_s / our_s:.2f}")


if __name__ == "__main__":
    main()
