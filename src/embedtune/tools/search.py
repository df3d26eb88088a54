"""`embedtune search "QUERY"`: the top chunks of one split for a query, by the retriever that
`select` shipped and by the dense base model, side by side.

Usage: embedtune search "how do generators work" --k 5 [--split train] [--json]

Works from what the pipeline stored: params.yaml (`embed`, `retrieve`), data/chunks (source file
and page), data/qa (the split's chunks), data/embeddings (their base embeddings),
models/retriever/retriever.json and, when the shipped retriever uses it, models/tuned. Only the
query is encoded, by `embed.model`; BM25 is built over the split's chunks when the shipped
retriever needs it. Scores come from the `RetrievalInputs` scorer that `eval` ranks with, so a
query ranks here as it would in `eval`; tied chunks share a rank.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from embedtune import io
from embedtune.config import EmbedConfig, RetrieveConfig, load_params
from embedtune.errors import EmbedtuneError
from embedtune.retrieval.retrievers import (
    Candidate,
    RetrievalInputs,
    candidates,
    shipped_retriever,
)
from embedtune.retrieval.scores import competition_ranks

PARAMS = {"embed": EmbedConfig, "retrieve": RetrieveConfig}
BASE = "base"
COLUMNS = ("base", "shipped")  # the two sides of the output, in order
PREVIEW_WORDS = 12  # words of a chunk shown in the table


@dataclass(frozen=True)
class Hit:
    """One chunk a retriever returned: a row of `--json`."""

    column: str  # "base" or "shipped"
    retriever: str  # the candidate's name, e.g. base+bm25:convex50
    rank: int  # 1 + the chunks scored higher
    score: float  # the retriever's own score (cosine, BM25, fused)
    chunk_id: str
    source: str  # "file.pdf p. 3", or the file name where the chunk has no page
    file_name: str
    page: str | None
    text: str


@dataclass(frozen=True)
class StoredSplit:
    """One split's chunks as the pipeline stored them."""

    corpus_ids: list[str]
    texts: list[str]  # in `corpus_ids` order
    embeddings: torch.Tensor  # (chunks, dim) base-model embeddings, from `embed`
    records: dict[str, dict]  # chunk id -> its record of data/chunks (file_name, page)


def check_request(query: str, split: str, k: int) -> None:
    """Refuse an empty query, an unknown split or a k below 1 before anything loads."""
    if not query.strip():
        raise EmbedtuneError('empty query: give the words to search for, e.g. embedtune search "…"')
    if split not in io.SPLITS:
        raise EmbedtuneError(f"unknown split {split!r} (known: {', '.join(io.SPLITS)})")
    if k < 1:
        raise EmbedtuneError(f"--k must be at least 1, got {k}")


def require(path: Path) -> None:
    """A missing input is one line naming it and the command that makes every input here."""
    if not path.exists():
        raise io.not_found(path, stage="select")


def load_split(split: str) -> StoredSplit:
    """The split's chunk texts, base embeddings and chunk records, checked to match."""
    from embedtune.embeddings import load_embeddings

    paths = io.CHUNKS_DIR / f"{split}.jsonl", io.QA_DIR / f"{split}.json"
    emb_path = io.EMBEDDINGS_DIR / f"{split}.safetensors"
    for path in (*paths, emb_path):
        require(path)
    with io.reading(paths[0], KeyError, TypeError):  # lines without the records' keys
        records = {r["id"]: r for r in io.read_jsonl(paths[0])}
    corpus = io.load_qa(split)["corpus"]
    emb = load_embeddings(emb_path)
    unknown = [cid for cid in emb.corpus_ids if cid not in corpus]
    if unknown:
        raise EmbedtuneError(
            f"{emb_path} holds chunk {unknown[0]!r}, which {paths[1]} lacks: "
            "run `dvc repro select` to bring them up to date"
        )
    texts = [corpus[cid] for cid in emb.corpus_ids]
    return StoredSplit(emb.corpus_ids, texts, emb.corpus, records)


def retrieval_inputs(
    query: str, stored: StoredSplit, shipped: Candidate, params, tuned=None
) -> RetrievalInputs:
    """What the base model and the shipped retriever need to score the split for `query`: the
    query encoded by the base model (and the tuned one when shipped uses it), BM25 if used."""
    from embedtune.embeddings import embed_texts, load_encoder
    from embedtune.retrieval.evaluation import with_tuned

    embed: EmbedConfig = params.embed
    base_q = embed_texts(load_encoder(embed), [query], embed.query_prefix, embed.batch_size)
    dense = {BASE: (base_q, stored.embeddings)}
    if tuned is not None:
        dense = with_tuned(tuned, [query], stored.texts, base_q, stored.embeddings)
    bm25 = params.retrieve.bm25 if shipped.lexical else None
    return RetrievalInputs.build(dense, [query], stored.texts, bm25)


def top_chunks(scores: torch.Tensor, k: int) -> list[tuple[int, int, float]]:
    """(rank, corpus row, score) of the `k` best-scored chunks, best first; tied chunks share
    the rank of the first of them and keep corpus order."""
    if not torch.isfinite(scores).all():  # as `eval` refuses them
        raise EmbedtuneError(
            "non-finite similarity scores (NaN or inf): the tuned model diverged; "
            "retrain it with a lower train.lr (`dvc repro select`)"
        )
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    ranks = competition_ranks(scores[None])[0]
    return [(int(ranks[i]), int(i), float(scores[i])) for i in order]


def source_of(record: dict | None) -> str:
    if record is None:  # a chunk data/chunks does not list: its source is unknown
        return "?"
    name, page = record.get("file_name") or "?", record.get("page")
    return name if page is None else f"{name} p. {page}"


def hits(
    column: str, candidate: Candidate, inputs: RetrievalInputs, stored: StoredSplit, k: int
) -> list[Hit]:
    """The `k` chunks `candidate` ranks first for the one query of `inputs`."""
    found = []
    for rank, row, score in top_chunks(inputs.scorer(candidate)(0, 1)[0], k):
        cid = stored.corpus_ids[row]
        record = stored.records.get(cid)
        name, page = (record.get("file_name", ""), record.get("page")) if record else ("", None)
        text = stored.texts[row]
        found.append(
            Hit(column, candidate.name, rank, score, cid, source_of(record), name, page, text)
        )
    return found


@dataclass(frozen=True)
class Results:
    """What one search found."""

    query: str
    split: str
    model: str  # the base model, `embed.model`
    chunks: int  # in the split: every one was ranked
    columns: dict[str, list[Hit]]  # "base", "shipped" -> hits, best first


def search(query: str, split: str = "validation", k: int = 5) -> Results:
    """The top `k` chunks of `split` for `query` by the base model and the shipped retriever,
    from the pipeline's files in the working directory."""
    from embedtune.train.methods.base import load_tuned

    check_request(query, split, k)
    params = load_params(PARAMS)
    known = {c.name: c for c in candidates(params.retrieve)}
    shipped = known[shipped_retriever(params.retrieve)]
    stored = load_split(split)
    tuned = None
    if shipped.dense == "tuned":
        require(io.TUNED_DIR / "config.json")
        tuned = load_tuned(io.TUNED_DIR, params.embed)
    inputs = retrieval_inputs(query, stored, shipped, params, tuned)
    columns = {"base": known[BASE], "shipped": shipped}
    found = {column: hits(column, c, inputs, stored, k) for column, c in columns.items()}
    return Results(query, split, params.embed.model, len(stored.corpus_ids), found)


def as_json(results: Results) -> str:
    """`--json`: one row per hit, the base model's first."""
    rows = [asdict(h) for column in COLUMNS for h in results.columns[column]]
    return json.dumps(rows, indent=2, ensure_ascii=False)


def preview(text: str, words: int = PREVIEW_WORDS) -> str:
    """The first `words` words of a chunk, on one line."""
    parts = text.split()
    return " ".join(parts[:words]) + (" …" if len(parts) > words else "")


def cell(hit: Hit) -> str:
    return f"#{hit.rank}  {hit.score:.4f}  {hit.source}\n{preview(hit.text)}"


def print_table(results: Results) -> None:
    """Base and shipped side by side: rank, score, source and first words of each chunk."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    base, shipped = (results.columns[c] for c in COLUMNS)
    title = f"{results.query!r} in the {results.split} split ({results.chunks} chunks)"
    table = Table(title=Text(title), show_lines=True)  # Text: brackets are no markup
    table.add_column(Text(f"base model {results.model}"), ratio=1)
    table.add_column(Text(f"shipped {shipped[0].retriever}"), ratio=1)
    for pair in zip(base, shipped, strict=True):
        table.add_row(*(Text(cell(hit)) for hit in pair))
    table.caption = "#rank  score  source; tied chunks share a rank"
    Console().print(table)
