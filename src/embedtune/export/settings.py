"""retriever.json of the exported retriever folder: its schema, the pipeline's own sections
(`BM25Config`, each fusion's config), checked whenever the folder is loaded, so a folder that
says something embedtune would not serve is refused instead of served as something else."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from embedtune.config import BM25Config, Section
from embedtune.errors import EmbedtuneError
from embedtune.retrieval.fusion import FUSIONS

REBUILD = "rebuild it with `dvc repro export`"


class IndexedBM25(BM25Config):
    index: str  # the bm25s index folder, inside the retriever folder


class Prompts(Section):
    query: str  # put before every query the model encodes
    document: str  # put before every chunk


class FolderSettings(Section):
    retriever: str  # the candidate's name, as `select` shipped it
    method: str  # the train.method of the tuned model
    dense: Literal["base", "tuned"] | None
    model: str | None  # the sentence-transformers folder that encodes queries
    prompts: Prompts | None
    llamaindex_adapter: str | None
    embeddings: str | None  # the chunks' vectors (safetensors)
    similarity: Literal["cosine"] | None
    bm25: IndexedBM25 | None
    fusion: dict[str, Any] | None  # {"kind": a fusion, its settings}
    chunks: str  # chunks.jsonl
    count: int = Field(ge=0)  # rows of every part

    @model_validator(mode="after")
    def _parts_of_its_kind(self) -> FolderSettings:
        if self.dense and None in (self.model, self.prompts, self.embeddings, self.similarity):
            raise ValueError("a dense retriever needs model, prompts, embeddings and similarity")
        if not self.dense and not self.bm25:
            raise ValueError("neither dense nor bm25: the folder retrieves with nothing")
        if self.fusion is not None and not (self.dense and self.bm25):
            raise ValueError("fusion needs both a dense model and bm25")
        return self


def check_settings(raw: Any, path: Path) -> FolderSettings:
    """`raw` (retriever.json as read) validated, its fusion by that fusion's own config; any
    problem is one line naming the key and `path`."""
    try:
        settings = FolderSettings.model_validate(raw, strict=True)
    except ValidationError as err:
        raise EmbedtuneError(problem(err, path)) from None
    if settings.fusion is not None:
        check_fusion(settings.fusion, path)
    return settings


def check_fusion(fusion: dict[str, Any], path: Path) -> None:
    kind = fusion.get("kind")
    if kind not in FUSIONS.names():
        raise EmbedtuneError(
            f"{path}: fusion.kind {kind!r} is not a fusion embedtune serves "
            f"(known: {', '.join(FUSIONS.names())}); {REBUILD}"
        )
    values = {key: value for key, value in fusion.items() if key != "kind"}
    try:
        FUSIONS.get(kind).Config.model_validate(values, strict=True)
    except ValidationError as err:
        raise EmbedtuneError(problem(err, path, "fusion")) from None


def problem(err: ValidationError, path: Path, section: str = "") -> str:
    """The first problem of `err` as one line: the file, the key, what is wrong, the fix."""
    first = err.errors()[0]
    key = ".".join(str(part) for part in (section, *first["loc"]) if part != "")
    if first["type"] == "missing":
        what = f"missing key {key}"
    elif first["type"] == "extra_forbidden":
        what = f"unknown key {key}"
    elif first["type"] == "value_error":
        what = first["ctx"]["error"]
    else:
        message = f"{first['msg'][0].lower()}{first['msg'][1:]}, got {first['input']!r}"
        what = f"{key}: {message}" if key else message
    return f"{path}: {what}; {REBUILD}"
