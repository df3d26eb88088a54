"""Typed, validated sections of `params.yaml`, the file `dvc exp run` composes from `conf/`.

Usage: params = load_params({"seed": int, "data": DataConfig}); params.data.timeout_s

`conf/` is the one source of values: every key is required here (a missing one is an error
that names it) and unknown keys are refused. Stages read `params.yaml` and never `conf/`: a
stage that composed `conf/` itself would not see `dvc exp run -S` overrides. Each stage loads
only the sections it lists (its `PARAMS`, the same list as its `params:` in dvc.yaml); the
sections of plug-in parts (`llm`, `train`) take their schema from the part they name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from embedtune.errors import EmbedtuneError
from embedtune.io import PARAMS_FILE

SECTIONS = ("seed", "data", "chunk", "llm", "synth", "embed", "mine", "train", "retrieve", "eval")
Device = Literal["auto", "cpu", "cuda"]


class Section(BaseModel):
    """A mapping of params.yaml: every key required, unknown keys refused, types strict."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Source(Section):
    """One document. A record rather than settings: `url` or `pydoc_topics`, `sha256` optional."""

    name: str  # file name under data/raw/<split>/
    url: str | None = None  # http(s)://, file:// or a local path
    sha256: str | None = None  # pinned hash; the download fails when it differs
    pydoc_topics: list[str] | None = None  # render these Python reference topics into a PDF

    @model_validator(mode="after")
    def _one_origin(self) -> Source:
        if (self.url is None) == (self.pydoc_topics is None):
            raise ValueError(f"document {self.name!r} needs exactly one of url or pydoc_topics")
        if "/" in self.name or self.name.startswith("."):
            raise ValueError(f"document name {self.name!r} must be a plain file name")
        return self


class DataConfig(Section):
    train: list[Source]
    validation: list[Source]
    timeout_s: float = Field(gt=0)
    local_dir: str | None
    validation_fraction: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _sources(self) -> DataConfig:
        if self.local_dir is not None:
            if not self.local_dir:
                raise ValueError("data.local_dir must name a folder")
            if self.train or self.validation:
                raise ValueError(
                    "data.local_dir replaces data.train and data.validation: leave those empty"
                )
            return self
        for split in ("train", "validation"):
            if not getattr(self, split):
                raise ValueError(f"data.{split} must list at least one document")
        names = [s.name for s in self.train + self.validation]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"document name {duplicated[0]!r} is used twice in data")
        return self


class ChunkConfig(Section):
    chunk_size: int = Field(gt=0)
    chunk_overlap: int = Field(ge=0)
    extensions: list[str]
    on_bad_document: Literal["fail", "skip"]
    max_file_mb: float = Field(gt=0)
    max_pages: int = Field(gt=0)
    max_text_mb: float = Field(gt=0)
    max_html_depth: int = Field(gt=0)

    @model_validator(mode="after")
    def _overlap(self) -> ChunkConfig:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk.chunk_overlap ({self.chunk_overlap}) must be smaller than "
                f"chunk.chunk_size ({self.chunk_size})"
            )
        return self


class SynthConfig(Section):
    class Judge(Section):
        """The same LLM scores each kept query 1-10; lower than `min_score` is dropped."""

        prompt: str  # template with {context} (the chunk) and {question} (the query)
        min_score: int = Field(ge=1, le=10)

        @model_validator(mode="after")
        def _template(self) -> SynthConfig.Judge:
            SynthConfig.check_template("synth.judge.prompt", self.prompt, {"context", "question"})
            return self

    num_questions: int = Field(gt=0)
    prompt: str
    max_chunks: int | None = Field(gt=0)
    min_question_chars: int = Field(ge=0)
    max_question_chars: int = Field(gt=0)
    max_copied_words: int = Field(gt=0)
    near_duplicate: float = Field(gt=0, le=1)
    max_failure_rate: float = Field(ge=0, le=1)
    # a chunk whose answer gave no valid question is asked again, up to this many answers in all
    attempts: int = Field(ge=1)
    retry_temperature: float = Field(gt=0)  # those retries sample (seeded) at this temperature
    keyword_queries: int = Field(ge=0)  # asked per chunk besides the questions (0 = none)
    keyword_prompt: str  # template with {context} and {num_questions} (= keyword_queries)
    min_keyword_words: int = Field(gt=0)  # keyword queries with fewer words are dropped
    max_keyword_words: int = Field(gt=0)  # keyword queries with more words are dropped
    judge: Judge | None  # null = no judge

    @model_validator(mode="after")
    def _template(self) -> SynthConfig:
        if self.prompt != "llamaindex" and "{context}" not in self.prompt:
            raise ValueError(
                "synth.prompt must contain {context} (or be `llamaindex` for the reference prompt)"
            )
        fields = {"context", "num_questions"}
        SynthConfig.check_template("synth.keyword_prompt", self.keyword_prompt, fields)
        if self.min_keyword_words > self.max_keyword_words:
            raise ValueError(
                f"synth.min_keyword_words ({self.min_keyword_words}) must not exceed "
                f"synth.max_keyword_words ({self.max_keyword_words})"
            )
        return self

    @staticmethod
    def check_template(key: str, template: str, fields: set[str]) -> None:
        """A template must name {context} and no placeholder but `fields` (formatting it
        cannot fail)."""
        import string

        try:
            parsed = string.Formatter().parse(template)
            named = {name for _, name, _, _ in parsed if name is not None}
        except ValueError as err:
            raise ValueError(f"{key} is not a valid template: {err}") from None
        if "context" not in named or not named <= fields:
            allowed = ", ".join(f"{{{f}}}" for f in sorted(fields))
            raise ValueError(f"{key} must contain {{context}} and no placeholder but {allowed}")


class EmbedConfig(Section):
    model: str = Field(min_length=1)
    batch_size: int = Field(gt=0)
    device: Device
    dtype: Literal["auto", "float32", "float16", "bfloat16"]  # auto: float16 on CUDA
    query_prefix: str
    document_prefix: str
    # the `embed` stage's multi-process pool, e.g. [cuda:0, cuda:1]; null = `device` alone
    devices: list[str] | None = Field(min_length=2)


class MineConfig(Section):
    # keep a training question only if the base model ranks its chunk within this (0 = keep all)
    roundtrip_top_k: int = Field(ge=0)
    negatives: int = Field(ge=0)  # hard negatives mined per training question (0 = none)
    negative_ranks: list[int]  # [first, last] base-model ranks the negatives are taken from
    # skip a candidate scoring above the positive's score minus this share of it
    relative_margin: float = Field(ge=0, lt=1)
    overlap_words: int = Field(gt=0)  # skip a candidate sharing this many words in a row with it
    cross_encoder: str | None  # scores (question, chunk) pairs for distillation; null = none
    # training questions (not chunks) set aside for the seen-corpus evaluation
    seen_corpus_fraction: float = Field(ge=0, lt=1)
    seen_corpus_max: int | None = Field(ge=1)  # at most this many of them (None: no cap)

    @model_validator(mode="after")
    def _ranks(self) -> MineConfig:
        ranks = self.negative_ranks
        if len(ranks) != 2 or not 1 <= ranks[0] <= ranks[1]:
            raise ValueError("mine.negative_ranks must be [first, last], 1 <= first <= last")
        if self.negatives > ranks[1] - ranks[0] + 1:
            raise ValueError(
                f"mine.negatives ({self.negatives}) must fit in mine.negative_ranks {ranks}"
            )
        return self


class BM25Config(Section):
    language: str = Field(min_length=1)  # PyStemmer's stemmer and bm25s' stop words, e.g. english
    stemming: bool  # reduce words to their stem (runs, running -> run)
    stopwords: bool  # drop the language's stop words
    k1: float = Field(ge=0)  # term-frequency saturation
    b: float = Field(ge=0, le=1)  # document-length normalisation
    method: Literal["robertson", "lucene", "atire", "bm25l", "bm25+"]  # bm25s' BM25 variant


class RetrieveConfig(Section):
    bm25: BM25Config
    dense: list[Literal["base", "tuned"]]  # dense models fused with BM25
    # fusion kind (a module of embedtune.retrieval.fusion) -> the settings of each candidate
    fusion: dict[str, list[dict[str, Any]]]
    # ship this candidate whatever the held-out questions say (null: the selection rule picks)
    ship: str | None


class EvalConfig(Section):
    # metric name (a module of embedtune.retrieval.metrics) -> cut-offs k reported as name@k
    metrics: dict[str, list[int]] = Field(min_length=1)
    bootstrap: int = Field(ge=0)  # paired bootstrap resamples for the tuned - base interval
    confidence: float = Field(gt=0, lt=1)  # of that interval
    benchmarks: list[str]  # folders in BEIR layout
    train_questions: int | None = Field(ge=1)  # scored for eval_train.json at most (None: all)

    @model_validator(mode="after")
    def _cutoffs(self) -> EvalConfig:
        for name, ks in self.metrics.items():
            if not ks or any(k <= 0 for k in ks):
                raise ValueError(f"eval.metrics.{name} must list cut-offs > 0, got {ks}")
        return self


# A section's schema: a type, or a function of the raw section that returns one (plug-in parts).
Schema = type | Callable[[Any], type]


def read_params(path: Path | str = PARAMS_FILE) -> dict:
    path = Path(path)
    if not path.is_file():
        raise EmbedtuneError(
            f"{path} not found: run `dvc exp run` (it composes params.yaml from conf/), "
            "or `dvc exp run -S experiment=cpu` on a machine without a GPU"
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise EmbedtuneError(f"{path} is not valid YAML: {err}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise EmbedtuneError(f"{path}: the top level must be a mapping")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise EmbedtuneError(f"{path}: unknown key {unknown[0]} (known: {', '.join(SECTIONS)})")
    return raw


def load_params(schemas: Mapping[str, Schema], path: Path | str = PARAMS_FILE) -> SimpleNamespace:
    """The sections of `path` that `schemas` names, each validated; only those are readable."""
    raw = read_params(path)
    values = {}
    for name, schema in schemas.items():
        if name not in raw:
            raise EmbedtuneError(f"{path}: missing key {name} ({_MISSING_HINT})")
        values[name] = parse_section(name, raw[name], schema, path)
    return SimpleNamespace(**values)


def parse_section(name: str, raw: Any, schema: Schema, path: Path | str = PARAMS_FILE) -> Any:
    """Validate one section; a bad value raises one `EmbedtuneError` naming its key."""
    try:
        if not isinstance(schema, type):  # a plug-in section: the part it names has the schema
            if not isinstance(raw, dict):
                raise EmbedtuneError(f"{name} must be a mapping, got {raw!r}")
            schema = schema(raw)
        if issubclass(schema, BaseModel):
            return schema.model_validate(raw, strict=True)
        return TypeAdapter(schema).validate_python(raw, strict=True)
    except ValidationError as err:
        raise EmbedtuneError(describe(err, name, path)) from None
    except EmbedtuneError as err:  # an unknown or missing part name (a registry's message)
        raise EmbedtuneError(f"{path}: {err}") from None


_MISSING_HINT = "conf/ sets every key: compose again with `dvc exp run` or `make params`"


def describe(err: ValidationError, section: str, path: Path | str) -> str:
    """The first problem of a validation error as one line: file, key, what is wrong."""
    first = err.errors()[0]
    key = section
    for part in first["loc"]:
        key += f"[{part}]" if isinstance(part, int) else f".{part}"
    if first["type"] == "missing":
        return f"{path}: missing key {key} ({_MISSING_HINT})"
    if first["type"] == "extra_forbidden":
        return f"{path}: unknown key {key}"
    if first["type"] == "value_error":
        return f"{path}: {first['ctx']['error']}"
    if first["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return f"{path}: {key} must be a mapping, got {first['input']!r}"
    # "Input should be ...", "String should have at least 1 character", "List should ..."
    message = re.sub(r"^\w+ should ", "must ", first["msg"])
    message = re.sub(r" after validation, not \d+$", "", message)
    return f"{path}: {key} {message[0].lower()}{message[1:]}, got {first['input']!r}"
