"""The shipped retriever as one folder a user can serve: models/export/retriever/.

Usage: served = load_folder("models/export/retriever")   # settings, chunks, vectors, BM25 index

What `select` shipped (models/retriever/retriever.json), over the chunks of every split:

    retriever.json           the candidate, its dense model, BM25 settings and fusion (`settings`)
    chunks.jsonl             one chunk a line: id, text, file_name, page, split; line i is row i
                             of the two files below
    embeddings.safetensors   dense retrievers: tensor `embeddings`, row i the chunk of line i as
                             `eval` embeds it (NUDGE's moved vectors included), L2-normalised
    bm25/                    retrievers with BM25: the index, bm25s' own save (no pickle)
    model/                   when the dense model is the base model: it, a sentence-transformers
                             folder; the tuned model is referenced (`../model`), not copied

The rows are BM25's documents and the dense vectors alike, so both rank the same chunks; the
collection is every split's chunks together (BM25's statistics are those of the whole
collection, not of one split as in `eval`). Serving it with LlamaIndex: docs/using-the-model.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from embedtune import io, progress
from embedtune.config import BM25Config
from embedtune.embeddings import SplitEmbeddings
from embedtune.errors import EmbedtuneError
from embedtune.export.settings import check_settings

FOLDER = io.EXPORTED_RETRIEVER_DIR
SETTINGS, CHUNKS, EMBEDDINGS, BM25_INDEX, BASE_MODEL = (
    "retriever.json",
    "chunks.jsonl",
    "embeddings.safetensors",
    "bm25",
    "model",
)
TUNED_MODEL = "../model"  # models/export/model, relative to the folder


@dataclass(frozen=True)
class SplitChunks:
    """One split as the pipeline stored it: its QA dict (data/qa), base embeddings
    (data/embeddings) and chunk records (data/chunks: id -> file_name, page)."""

    name: str
    dataset: dict
    embeddings: SplitEmbeddings
    records: dict[str, dict]


@dataclass
class ServedRetriever:
    """The folder's contents: `settings` is retriever.json, row i of `embeddings` and document i
    of `bm25` are the chunk `chunks[i]`."""

    settings: dict
    chunks: list[dict]
    embeddings: torch.Tensor | None = None  # dense retrievers only
    bm25: object | None = None  # bm25s.BM25, retrievers with BM25 only
    stemmer: object | None = None  # PyStemmer's, when bm25 stems
    base_model: list | None = None  # the base model's modules, when it is the dense model

    @property
    def dense(self) -> str | None:
        return self.settings["dense"]


def collection(splits: list[SplitChunks], tuned, dense: str | None):
    """Every split's chunks, in their embeddings file's order, split after split (a chunk id
    seen in an earlier split is kept once), with their dense vectors: the base model's, or
    `tuned.encode_corpus` as `eval` gives them (None without a dense model)."""
    chunks, vectors, seen = [], [], set()
    for split in splits:
        ids = split.embeddings.corpus_ids
        rows = [i for i, cid in enumerate(ids) if cid not in seen]
        seen.update(ids)
        texts = [split.dataset["corpus"][ids[i]] for i in rows]
        for i, text in zip(rows, texts, strict=True):
            record = split.records.get(ids[i], {})
            chunks.append(
                {
                    "id": ids[i],
                    "text": text,
                    "file_name": record.get("file_name"),
                    "page": record.get("page"),
                    "split": split.name,
                }
            )
        if dense == "base":
            vectors.append(split.embeddings.corpus[rows])
        elif dense == "tuned":
            base = split.embeddings.corpus[rows]
            vectors.append(torch.as_tensor(tuned.encode_corpus(texts, base)).float().cpu())
        progress.advance(len(ids), "chunks")  # to the stage's task, if it keeps one
    return chunks, (torch.cat(vectors).contiguous() if dense else None)


def build(
    shipped: dict,
    splits: list[SplitChunks],
    bm25: BM25Config,
    prompts: dict,
    method: str,
    tuned=None,
    base_model: list | None = None,
    adapter: bool = False,
) -> ServedRetriever:
    """The folder's contents for the shipped retriever `shipped` (models/retriever/retriever.json)
    over `splits`; `tuned` is needed when its dense model is `tuned`, `base_model` (the base
    model's modules, normalised) when it is `base`."""
    from embedtune.retrieval.lexical import BM25Index

    dense, lexical = shipped["dense"], bool(shipped["bm25"])
    chunks, vectors = collection(splits, tuned, dense)
    if not chunks:
        raise EmbedtuneError("no chunk in data/qa: run `dvc repro synth` first")
    index = BM25Index.build([c["text"] for c in chunks], bm25) if lexical else None
    model = {"base": BASE_MODEL, "tuned": TUNED_MODEL}.get(dense)
    settings = {
        "retriever": shipped["retriever"],
        "method": method,
        "dense": dense,
        "model": model,
        "prompts": prompts if dense else None,
        "llamaindex_adapter": f"{TUNED_MODEL}/llamaindex_adapter"
        if dense == "tuned" and adapter
        else None,
        "embeddings": EMBEDDINGS if dense else None,
        "similarity": "cosine" if dense else None,
        "bm25": {**bm25.model_dump(), "index": BM25_INDEX} if lexical else None,
        "fusion": shipped["fusion"],
        "chunks": CHUNKS,
        "count": len(chunks),
    }
    return ServedRetriever(
        settings,
        chunks,
        vectors,
        index.engine if index else None,
        index.stemmer if index else None,
        base_model if dense == "base" else None,
    )


def save_folder(served: ServedRetriever, folder: Path) -> None:
    """Write `served` into the new folder `folder`."""
    folder.mkdir(parents=True)
    io.write_json(folder / SETTINGS, served.settings)
    io.write_jsonl(folder / CHUNKS, served.chunks)
    if served.embeddings is not None:
        from safetensors.torch import save_file

        save_file({"embeddings": served.embeddings}, str(folder / EMBEDDINGS))
    if served.bm25 is not None:
        served.bm25.save(str(folder / BM25_INDEX), show_progress=False)
    if served.base_model is not None:
        from sentence_transformers import SentenceTransformer

        prompts = served.settings["prompts"]
        model = SentenceTransformer(
            modules=served.base_model, device="cpu", prompts=prompts, similarity_fn_name="cosine"
        )
        model.save(str(folder / BASE_MODEL), create_model_card=False)


def load_folder(folder: Path | str = FOLDER, method: str | None = None) -> ServedRetriever:
    """The folder `export` wrote, checked: settings embedtune would not serve (see
    `embedtune.export.settings`), a missing part, or (with `method`, params.yaml's
    `train.method`) a folder exported for another method, is one line saying what to run."""
    folder = Path(folder)
    settings = io.read_json(folder / SETTINGS, stage="export")
    check_settings(settings, folder / SETTINGS)
    if method is not None and settings["method"] != method:
        raise EmbedtuneError(
            f"{folder} was exported for train.method={settings['method']}, params.yaml's "
            f"train.method is {method}: run `dvc repro export`"
        )
    parts = [settings["chunks"], settings["embeddings"], settings["model"]]
    parts += [settings["bm25"]["index"]] if settings["bm25"] else []
    for part in filter(None, parts):
        if not (folder / part).exists():
            raise io.not_found(folder / part, stage="export")
    chunks = io.read_jsonl(folder / settings["chunks"])
    vectors = bm25 = stemmer = None
    if settings["embeddings"]:
        vectors = io.read_safetensors(folder / settings["embeddings"], stage="export")[0]
        vectors = vectors["embeddings"]
    if settings["bm25"]:
        bm25, stemmer = load_bm25(folder / settings["bm25"]["index"], settings["bm25"])
    rows = {
        "chunks.jsonl": len(chunks),
        "embeddings": None if vectors is None else len(vectors),
        "bm25": None if bm25 is None else int(bm25.scores["num_docs"]),
    }
    if {n for n in rows.values() if n is not None} != {settings["count"]}:
        raise EmbedtuneError(
            f"{folder} is damaged (rows: {json.dumps(rows)}, retriever.json says "
            f"{settings['count']}): rebuild it with `dvc repro export`"
        )
    return ServedRetriever(settings, chunks, vectors, bm25, stemmer)


def load_bm25(path: Path, cfg: dict):
    """The bm25s index saved at `path`, and the stemmer its queries need."""
    import bm25s
    import Stemmer

    with io.reading(path, KeyError, stage="export"):
        engine = bm25s.BM25.load(str(path))
    return engine, Stemmer.Stemmer(cfg["language"]) if cfg["stemming"] else None
