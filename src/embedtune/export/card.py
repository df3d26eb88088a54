"""The model card's own sections: pure functions from what the pipeline recorded to Markdown.

sentence-transformers writes the card's header and architecture (`card_fields` fills its
fields); `card_sections` is appended to it: base model, method and parameters, documents,
questions, every figure of `eval` with its interval, the selection verdicts, provenance, and how
to load and push the folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from embedtune.export.usage import CHUNK_EMBEDDINGS, CHUNKS, loading
from embedtune.retrieval.bootstrap import format_interval
from embedtune.retrieval.selection import HELDOUT_NAME

# PyStemmer's language names (retrieve.bm25.language) -> the ISO 639-1 codes model cards use.
LANGUAGES = {
    "arabic": "ar", "armenian": "hy", "basque": "eu", "catalan": "ca", "danish": "da",
    "dutch": "nl", "english": "en", "finnish": "fi", "french": "fr", "german": "de",
    "greek": "el", "hindi": "hi", "hungarian": "hu", "indonesian": "id", "irish": "ga",
    "italian": "it", "lithuanian": "lt", "nepali": "ne", "norwegian": "no",
    "portuguese": "pt", "romanian": "ro", "russian": "ru", "serbian": "sr", "spanish": "es",
    "swedish": "sv", "tamil": "ta", "turkish": "tr", "yiddish": "yi",
}  # fmt: skip
GAIN = f"gain_{HELDOUT_NAME}"  # the held-out gain in metrics/train/metrics.json and select.json


@dataclass(frozen=True)
class CardFacts:
    """What the card reports, as the pipeline recorded it (each file's content as loaded)."""

    method: str
    train: dict  # params.yaml's train section
    embed: dict  # params.yaml's embed section
    llm: dict  # params.yaml's llm section: the question writer
    language: str  # retrieve.bm25.language, the documents' language
    confidence: float  # eval.confidence, of every interval
    manifest: dict  # data/manifest.json
    synth: dict  # per split: chunks, questions, failed_chunks (data/qa)
    validation: dict  # metrics/eval.json
    validation_delta: dict  # metrics/eval_delta.json
    seen: dict  # metrics/eval_seen.json
    benchmarks: dict  # metrics/benchmarks.json
    training: dict  # metrics/train/metrics.json
    select: dict  # metrics/select.json
    retriever: dict  # models/retriever/retriever.json
    commit: str  # git commit of the code, or "unknown"
    tuned_md5: str  # models/tuned's md5 in dvc.lock, or "unknown"
    base_hub_id: str | None = None  # embed.model when it names a Hugging Face Hub model
    adapter: bool = False  # queries pass an adapter (a Router), chunks do not
    chunks: int = 0  # nudge: rows of chunk_embeddings.safetensors


def card_fields(facts: CardFacts) -> dict:
    """`SentenceTransformerModelCardData` fields: language, model name, base model, tags."""
    code = LANGUAGES.get(facts.language.lower(), facts.language if len(facts.language) == 2 else "")
    return {
        "language": [code] if code else [],
        "model_name": f"{short_name(facts.embed['model'])} tuned with embedtune ({facts.method})",
        "base_model": facts.base_hub_id,
        "tags": ["embedtune", facts.method],
    }


def short_name(ref: str) -> str:
    """`org/name` -> name, `pkg:module/sub` -> module, a folder -> its name."""
    if ref.startswith(("pkg:", "pieces:")):
        return ref.partition(":")[2].split("/")[0]
    return Path(ref).name


def card_sections(facts: CardFacts) -> str:
    """Every section embedtune appends to the sentence-transformers card, as Markdown."""
    parts = [
        overview(facts),
        yaml_block("Method parameters (params.yaml `train`)", facts.train),
        documents(facts.manifest),
        questions(facts.llm, facts.synth),
        evaluation(facts),
        selection(facts.training, facts.select, facts.retriever),
        loading(facts.method, facts.embed, facts.adapter, facts.chunks),
    ]
    return "\n\n".join(parts) + "\n"


def overview(facts: CardFacts) -> str:
    embed = facts.embed
    if facts.adapter:
        how = (
            "Queries pass the base model, are L2-normalised, then mapped by the trained adapter "
            "(a sentence-transformers `Router`: `encode_query`); documents keep the base model's "
            "normalised embeddings (`encode_document`), so an index built with the base model "
            "stays valid."
        )
    elif facts.chunks:
        how = (
            f"The encoder is the base model, unchanged (normalised embeddings); NUDGE moved the "
            f"stored embeddings of {facts.chunks} training chunks, shipped beside it in "
            f"`{CHUNK_EMBEDDINGS}` with their ids and texts in `{CHUNKS}`."
        )
    else:
        how = "Every weight of the base model was fine-tuned; queries and documents use it alike."
    return "\n".join(
        [
            "## Tuned with embedtune",
            "",
            how,
            "",
            f"- **Base model:** `{embed['model']}` (query prefix {embed['query_prefix']!r}, "
            f"document prefix {embed['document_prefix']!r}, saved as the `query` and `document` "
            "prompts)",
            f"- **Method:** `{facts.method}`",
            f"- **Code:** git commit `{facts.commit}`",
            f"- **Tuned model:** `models/tuned` md5 `{facts.tuned_md5}` (dvc.lock)",
        ]
    )


def yaml_block(title: str, values: dict) -> str:
    text = yaml.safe_dump(values, sort_keys=True, allow_unicode=True).strip()
    return f"### {title}\n\n```yaml\n{text}\n```"


def documents(manifest: dict) -> str:
    rows = ["| split | document | bytes | sha256 |", "|---|---|---|---|"]
    for split, records in manifest.items():
        rows += [f"| {split} | {r['name']} | {r['size']} | `{r['sha256']}` |" for r in records]
    return "### Documents\n\nTrained on the `train` split; scored on `validation`.\n\n" + "\n".join(
        rows
    )


def questions(llm: dict, synth: dict) -> str:
    rows = [
        "| split | chunks with questions | questions | chunks without one |",
        "|---|---|---|---|",
    ]
    for split, counts in synth.items():
        rows.append(
            f"| {split} | {counts['chunks']} | {counts['questions']} | {counts['failed_chunks']} |"
        )
    writer = yaml_block("Questions", llm).split("\n", 2)[2]
    return (
        "### Questions\n\nWritten by (params.yaml `llm`):\n\n" + writer + "\n\n" + "\n".join(rows)
    )


def metric_order(name: str) -> tuple[str, int]:
    metric, _, k = name.partition("@")
    return metric, int(k) if k.isdigit() else 0


def interval(d: dict | None) -> str:
    return f" ({format_interval(d)})" if d else ""


def figures_table(figures: dict, tuned_delta: dict) -> str:
    """One row per retriever, one column per metric: its value and, except for the dense base,
    its difference from the dense base with the interval."""
    values = figures.get("retrievers") or {m: figures[m] for m in ("base", "tuned")}
    deltas = {**figures.get("delta_retrievers", {}), "tuned": tuned_delta}
    names = ["base", "tuned", *sorted(set(values) - {"base", "tuned"})]
    metrics = sorted((m for m in values["base"] if m != "queries"), key=metric_order)
    shipped = figures.get("shipped", {}).get("retriever")
    rows = ["| retriever | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for name in names:
        label = f"**{name} (shipped)**" if name == shipped else name
        cells = [f"{values[name][m]:.4f}{interval(deltas.get(name, {}).get(m))}" for m in metrics]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def split_figures(title: str, figures: dict, tuned_delta: dict, empty: str) -> str:
    if not figures:
        return f"#### {title}\n\n{empty}"
    queries = figures["base"].get("queries", "")
    return f"#### {title} ({queries} questions)\n\n" + figures_table(figures, tuned_delta)


def evaluation(facts: CardFacts) -> str:
    parts = [
        "### Evaluation",
        f"Each cell: the figure, then its difference from the dense base model with a "
        f"{facts.confidence:.0%} paired bootstrap interval over the questions (metrics/).",
        split_figures(
            "Validation documents, never trained on",
            facts.validation,
            facts.validation_delta,
            "",
        ),
        split_figures(
            "Seen corpus: new questions about the training documents",
            facts.seen,
            facts.seen.get("delta", {}),
            "No seen-corpus questions (`mine.seen_corpus_fraction` is 0).",
        ),
    ]
    parts += [
        split_figures(f"Benchmark {name}", figures, figures.get("delta", {}), "")
        for name, figures in sorted(facts.benchmarks.items())
    ] or ["No benchmark (`eval.benchmarks` is empty)."]
    return "\n\n".join(parts)


def selection(training: dict, chosen: dict, retriever: dict) -> str:
    """The verdicts on held-out training questions: which epoch `train` kept, which retriever
    `select` shipped (and what it is)."""
    held = training.get("heldout")
    if held:
        kept = f"epoch {held['kept_epoch']} kept" if held["kept_epoch"] else "untrained model kept"
        epoch = (
            f"best trained epoch {held['best_epoch']}, {HELDOUT_NAME} "
            f"{format_interval(held[GAIN])} over the untrained model; {kept}"
        )
    else:
        epoch = "no held-out questions (`train.holdout_fraction` 0): the last epoch kept"
    how = "forced by `retrieve.ship`" if chosen.get("forced") else "by the selection rule"
    best = chosen.get("best")
    verdict = f"best `{best}`, {format_interval(chosen[GAIN])} over `base`; " if best else ""
    lines = [
        "### Selection (held-out training questions, never validation)",
        "",
        f"- **Epoch:** {epoch}",
        f"- **Retriever:** {verdict}shipped `{chosen['shipped']}` ({how}), from "
        f"{chosen.get('heldout_questions', 0)} held-out questions",
    ]
    lines += [
        f"  - `{name}`: held-out {HELDOUT_NAME} {value:.4f}"
        for name, value in chosen.get(HELDOUT_NAME, {}).items()
    ]
    shipped = yaml.safe_dump(retriever, sort_keys=True).strip()
    lines += [
        "",
        "The shipped retriever as models/retriever/retriever.json describes it (`dense: tuned` "
        "is this folder, `dense: base` the base model; BM25 is rebuilt with bm25s from its "
        "settings):",
        "",
        f"```yaml\n{shipped}\n```",
    ]
    return "\n".join(lines)
