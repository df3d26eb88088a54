"""Entry point of stage `export` (see `embedtune.export`): python -m embedtune.export"""

from __future__ import annotations

from dataclasses import replace

from embedtune import io, progress
from embedtune.config import EmbedConfig, EvalConfig, RetrieveConfig, load_params
from embedtune.embeddings import load_embeddings, load_encoder
from embedtune.errors import EmbedtuneError
from embedtune.export.card import card_fields, card_sections
from embedtune.export.facts import gather
from embedtune.export.model import Sources, exported, normalised, save_exported
from embedtune.export.retriever import SplitChunks, build, save_folder
from embedtune.stage import run_stage
from embedtune.train.methods.base import load_tuned, method_config

# `llm` is only reported: a plain mapping, so editing an LLM backend does not rerun the stage.
PARAMS = {
    "embed": EmbedConfig,
    "train": method_config,
    "llm": dict,
    "retrieve": RetrieveConfig,
    "eval": EvalConfig,
}


def training_split():
    return io.load_qa("train"), load_embeddings(io.EMBEDDINGS_DIR / "train.safetensors")


def stored_splits() -> list[SplitChunks]:
    """Every split's chunks as the pipeline stored them, for the retriever folder."""
    splits = []
    for split in io.SPLITS:
        records = {r["id"]: r for r in io.read_jsonl(io.CHUNKS_DIR / f"{split}.jsonl")}
        emb = load_embeddings(io.EMBEDDINGS_DIR / f"{split}.safetensors")
        splits.append(SplitChunks(split, io.load_qa(split), emb, records))
    return splits


def main() -> None:
    params = load_params(PARAMS)
    facts = gather(params)  # every report file first: a missing one stops before a model loads
    embed = params.embed.model_copy(update={"device": "cpu", "dtype": "float32"})
    tuned = load_tuned(io.TUNED_DIR, embed)
    if tuned.method != params.train.method:
        raise EmbedtuneError(
            f"{io.TUNED_DIR} holds {tuned.method}, params.yaml's train.method is "
            f"{params.train.method}: run `dvc repro train` first"
        )
    result = exported(tuned, Sources(lambda: load_encoder(embed), training_split))
    chunks = len(result.chunks.ids) if result.chunks else 0
    facts = replace(facts, adapter=result.adapter is not None, chunks=chunks)
    prompts = {"query": embed.query_prefix, "document": embed.document_prefix}
    shipped = facts.retriever
    base = normalised(list(load_encoder(embed))) if shipped["dense"] == "base" else None
    adapter = result.adapter is not None
    splits = stored_splits()
    total = sum(len(s.embeddings.corpus_ids) for s in splits)
    with progress.task(f"export {shipped['retriever']}", total, "chunks"):
        served = build(
            shipped, splits, params.retrieve.bm25, prompts, tuned.method, tuned, base, adapter
        )
    model_dir, retriever_dir = io.EXPORTED_MODEL_DIR, io.EXPORTED_RETRIEVER_DIR
    with io.atomic_folder(io.EXPORT_DIR) as folder:
        card = card_fields(facts), card_sections(facts)
        save_exported(result, folder / model_dir.name, prompts, *card)
        save_folder(served, folder / retriever_dir.name)
    print(f"{tuned.method} exported to {model_dir}/ (model card: {model_dir}/README.md)")
    print(f"retriever {shipped['retriever']} ({len(served.chunks)} chunks) in {retriever_dir}/")


if __name__ == "__main__":
    run_stage("export", main)
