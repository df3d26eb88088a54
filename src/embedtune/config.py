"""Typed, validated view of `params.yaml`, the file `dvc exp run` composes from `conf/`.

Stages read `params.yaml` and never `conf/`: a stage that composed `conf/` itself would not see
`dvc exp run -S` overrides.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from embedtune.errors import EmbedtuneError

PARAMS_FILE = Path("params.yaml")


@dataclass(frozen=True)
class Source:
    name: str  # file name under data/raw/<split>/
    url: str | None = None  # http(s)://, file:// or a local path
    sha256: str | None = None  # pinned hash; the download fails when it differs
    pydoc_topics: list[str] | None = None  # render these Python reference topics into a PDF


@dataclass(frozen=True)
class DataConfig:
    train: list[Source]  # empty when local_dir is set
    validation: list[Source]  # empty when local_dir is set
    timeout_s: float = 60.0
    # A folder of documents instead of listed sources, split into train and validation by file
    local_dir: str | None = None  # PDF, txt, md, html and docx files (subfolders included)
    validation_fraction: float = 0.2  # share of local_dir's files that validate (at least one)


@dataclass(frozen=True)
class ChunkConfig:
    chunk_size: int = 512
    chunk_overlap: int = 32
    extensions: list[str] = field(default_factory=lambda: [".pdf"])


@dataclass(frozen=True)
class LLMConfig:
    backend: Literal["transformers", "openai"] = "transformers"
    model: str = ""
    gguf_file: str | None = None
    quantization: Literal["none", "8bit", "4bit"] = "none"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = 8
    max_new_tokens: int = 96
    temperature: float = 0.0
    max_input_tokens: int = 1024
    chat_template: str | None = None  # Jinja template for a model whose tokenizer has none
    # static: the KV cache is allocated once per batch instead of grown (copied) every token
    kv_cache: Literal["static", "dynamic"] = "static"
    # torch.compile the decoding step (transformers does so with a static cache on CUDA unless
    # told not to); every new batch shape compiles again, so it pays only on long runs
    compile: bool = False
    # backend: openai (any OpenAI-compatible server: vLLM, TGI, llama.cpp, transformers serve)
    base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the variable holding the key, never the key
    concurrency: int = 4  # requests in flight at most
    timeout_s: float = 120.0  # per request
    max_retries: int = 4  # retries with exponential backoff on timeouts, 429 and 5xx


@dataclass(frozen=True)
class SynthConfig:
    num_questions: int = 2
    prompt: str = ""
    max_chunks: int | None = None
    min_question_chars: int = 12
    max_question_chars: int = 300
    max_copied_words: int = 10
    near_duplicate: float = 0.8
    max_failure_rate: float = 0.2


@dataclass(frozen=True)
class EmbedConfig:
    model: str = ""
    batch_size: int = 32
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: fp16 on CUDA
    query_prefix: str = ""
    document_prefix: str = ""


@dataclass(frozen=True)
class TrainConfig:
    method: Literal["adapter_linear", "adapter_2layer", "full"] = "adapter_linear"
    # adapters (trained on cached embeddings; they transform query embeddings only)
    bias: bool = True
    hidden_size: int = 1024  # adapter_2layer
    residual: bool = True  # adapter_2layer: output = input + MLP(input)
    # optimisation
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 0.01
    weight_decay: float = 0.01
    epochs: int = 4
    batch_size: int = 10
    scale: float = 20.0  # inverse temperature of cosine scores in the ranking loss
    warmup_ratio: float = 0.0  # full: fraction of steps with a linear learning-rate warm-up
    # model selection on a held-out slice of the TRAINING questions (never validation)
    holdout_fraction: float = 0.1  # of training chunks whose questions are held out
    patience: int = 0  # epochs without held-out improvement before stopping (0 = run all)
    # full fine-tune (sentence-transformers)
    loss: Literal["mnrl", "cached_mnrl"] = "mnrl"
    mini_batch_size: int = 32  # cached_mnrl: examples per forward pass
    matryoshka_dims: list[int] = field(default_factory=list)  # e.g. [384, 256, 128, 64]
    hard_negatives: int = 0  # mined with the base model per question (0 = in-batch only)
    hard_negative_ranks: list[int] = field(default_factory=lambda: [3, 30])  # [first, last]
    max_seq_length: int | None = None  # full: truncate texts to this many tokens


@dataclass(frozen=True)
class EvalConfig:
    k: list[int] = field(default_factory=lambda: [1, 3, 5, 10])  # cut-offs for hit rate/recall
    bootstrap: int = 1000  # paired bootstrap resamples for the tuned - base interval
    confidence: float = 0.95  # of that interval
    benchmarks: list[str] = field(default_factory=list)  # folders in BEIR layout


@dataclass(frozen=True)
class Params:
    seed: int
    data: DataConfig
    chunk: ChunkConfig
    llm: LLMConfig
    synth: SynthConfig
    embed: EmbedConfig
    train: TrainConfig
    eval: EvalConfig


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read `params.yaml` into `Params`; a bad value raises one clear `EmbedtuneError`."""
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
    params = _build(Params, raw, "", path)
    validate(params, path)
    return params


def _build(cls: type, raw: Any, prefix: str, path: Path) -> Any:
    """Build dataclass `cls` from a mapping, checking keys and scalar types, naming the bad key."""
    if not isinstance(raw, dict):
        raise EmbedtuneError(
            f"{path}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {raw!r}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise EmbedtuneError(
            f"{path}: unknown key {prefix}{unknown[0]} (known: {', '.join(fields)})"
        )
    values = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name not in raw:
            no_default = (
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            )
            if no_default:
                raise EmbedtuneError(f"{path}: missing key {key}")
            continue
        values[name] = _coerce(hints[name], raw[name], key, path)
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str, path: Path) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key, path)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(map(str, args))
            raise EmbedtuneError(f"{path}: {key} must be one of {choices}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise EmbedtuneError(f"{path}: {key} must be a list, got {value!r}")
        (inner,) = args
        return [_coerce(inner, v, f"{key}[{i}]", path) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{key}.", path)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool) or not isinstance(value, hint):
        raise EmbedtuneError(f"{path}: {key} must be a {hint.__name__}, got {value!r}")
    return value


def validate(p: Params, path: Path | str = PARAMS_FILE) -> None:
    """Check value ranges and relations that types alone cannot express."""
    local = p.data.local_dir is not None
    checks = [
        (local or bool(p.data.train), "data.train must list at least one document"),
        (local or bool(p.data.validation), "data.validation must list at least one document"),
        (
            not local or not (p.data.train or p.data.validation),
            "data.local_dir replaces data.train and data.validation: leave those empty",
        ),
        (not local or bool(p.data.local_dir), "data.local_dir must name a folder"),
        (
            0 < p.data.validation_fraction < 1,
            f"data.validation_fraction must be in (0, 1), got {p.data.validation_fraction}",
        ),
        (p.data.timeout_s > 0, "data.timeout_s must be > 0"),
        (p.chunk.chunk_size > 0, "chunk.chunk_size must be > 0"),
        (p.chunk.chunk_overlap >= 0, "chunk.chunk_overlap must be >= 0"),
        (
            p.chunk.chunk_overlap < p.chunk.chunk_size,
            f"chunk.chunk_overlap ({p.chunk.chunk_overlap}) must be smaller than "
            f"chunk.chunk_size ({p.chunk.chunk_size})",
        ),
        (bool(p.llm.model), "llm.model must name a model"),
        (p.llm.batch_size > 0, "llm.batch_size must be > 0"),
        (p.llm.max_new_tokens > 0, "llm.max_new_tokens must be > 0"),
        (p.llm.temperature >= 0, "llm.temperature must be >= 0"),
        (
            p.llm.backend != "openai" or bool(p.llm.base_url),
            "llm.base_url must be set for llm.backend=openai (e.g. http://127.0.0.1:8000/v1)",
        ),
        (p.llm.concurrency > 0, "llm.concurrency must be > 0"),
        (p.llm.timeout_s > 0, "llm.timeout_s must be > 0"),
        (p.llm.max_retries >= 0, "llm.max_retries must be >= 0"),
        (p.synth.num_questions > 0, "synth.num_questions must be > 0"),
        (
            p.synth.prompt == "llamaindex" or "{context}" in p.synth.prompt,
            "synth.prompt must contain {context} (or be `llamaindex` for the reference prompt)",
        ),
        (p.synth.max_chunks is None or p.synth.max_chunks > 0, "synth.max_chunks must be > 0"),
        (p.synth.max_copied_words > 0, "synth.max_copied_words must be > 0"),
        (0 < p.synth.near_duplicate <= 1, "synth.near_duplicate must be in (0, 1]"),
        (0 <= p.synth.max_failure_rate <= 1, "synth.max_failure_rate must be in [0, 1]"),
        (bool(p.embed.model), "embed.model must name a model"),
        (p.embed.batch_size > 0, "embed.batch_size must be > 0"),
        (p.train.lr > 0, f"train.lr must be > 0, got {p.train.lr}"),
        (p.train.weight_decay >= 0, "train.weight_decay must be >= 0"),
        (p.train.epochs > 0, "train.epochs must be > 0"),
        (p.train.batch_size > 1, "train.batch_size must be > 1 (in-batch negatives)"),
        (p.train.scale > 0, "train.scale must be > 0"),
        (p.train.hidden_size > 0, "train.hidden_size must be > 0"),
        (0 <= p.train.warmup_ratio < 1, "train.warmup_ratio must be in [0, 1)"),
        (0 <= p.train.holdout_fraction < 1, "train.holdout_fraction must be in [0, 1)"),
        (p.train.patience >= 0, "train.patience must be >= 0"),
        (p.train.mini_batch_size > 0, "train.mini_batch_size must be > 0"),
        (all(d > 0 for d in p.train.matryoshka_dims), "train.matryoshka_dims must be > 0"),
        (p.train.hard_negatives >= 0, "train.hard_negatives must be >= 0"),
        (
            len(p.train.hard_negative_ranks) == 2
            and 1 <= p.train.hard_negative_ranks[0] <= p.train.hard_negative_ranks[1],
            "train.hard_negative_ranks must be [first, last] with 1 <= first <= last",
        ),
        (
            len(p.train.hard_negative_ranks) != 2
            or p.train.hard_negatives
            <= p.train.hard_negative_ranks[1] - p.train.hard_negative_ranks[0] + 1,
            f"train.hard_negatives ({p.train.hard_negatives}) must fit in the rank window "
            f"train.hard_negative_ranks {p.train.hard_negative_ranks}",
        ),
        (
            p.train.max_seq_length is None or p.train.max_seq_length > 0,
            "train.max_seq_length must be > 0 (or null for the model's own limit)",
        ),
        (
            p.train.patience == 0 or p.train.holdout_fraction > 0,
            "train.patience needs held-out questions: set train.holdout_fraction > 0",
        ),
        (
            p.train.method != "full" or p.train.optimizer == "adamw",
            "train.optimizer must be adamw for train.method=full (the trainer's optimiser)",
        ),
        (
            p.train.method == "full"
            or (
                p.train.loss == "mnrl"
                and not p.train.matryoshka_dims
                and p.train.hard_negatives == 0
                and p.train.max_seq_length is None
                and p.train.warmup_ratio == 0
            ),
            "train.loss, matryoshka_dims, hard_negatives, max_seq_length and warmup_ratio "
            f"apply to train.method=full only (train.method is {p.train.method})",
        ),
        (bool(p.eval.k) and all(k > 0 for k in p.eval.k), "eval.k must list cut-offs > 0"),
        (p.eval.bootstrap >= 0, "eval.bootstrap must be >= 0"),
        (0 < p.eval.confidence < 1, "eval.confidence must be in (0, 1)"),
    ]
    for ok, message in checks:
        if not ok:
            raise EmbedtuneError(f"{path}: {message}")
    names = [s.name for s in p.data.train + p.data.validation]
    for source in p.data.train + p.data.validation:
        if (source.url is None) == (source.pydoc_topics is None):
            raise EmbedtuneError(
                f"{path}: document {source.name!r} needs exactly one of url or pydoc_topics"
            )
        if "/" in source.name or source.name.startswith("."):
            raise EmbedtuneError(f"{path}: document name {source.name!r} must be a plain file name")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise EmbedtuneError(f"{path}: document name {duplicated[0]!r} is used twice in data")
