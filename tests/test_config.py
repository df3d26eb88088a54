"""`load_params` on params.yaml files composed from conf/ and then edited: every key required,
unknown keys refused, strict types, one line naming the key for every problem."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from embedtune.compose import all_schemas, compose
from embedtune.config import (
    SECTIONS,
    ChunkConfig,
    DataConfig,
    EvalConfig,
    Source,
    SynthConfig,
    load_params,
    parse_section,
)
from embedtune.errors import EmbedtuneError
from tests.helpers import ROOT

# Together these presets name every LLM backend, training method and loss at least once.
PRESETS = {
    "default": (),
    "cpu": ("experiment=cpu",),
    "local": ("data=local",),
    "openai": ("llm=openai_server",),
    "2layer": ("train=adapter_2layer",),
    "full": ("train=full",),
    "cached_mnrl": ("train=full", "train/loss=cached_mnrl"),
    "gist": ("train=full", "train/loss=gist"),
    "margin_mse": ("train=full", "train/loss=margin_mse"),
    "fusion_margin_mse": ("train=full", "train/loss=fusion_margin_mse"),
    "nudge": ("train=nudge",),
    "reference": ("synth=reference",),  # synth's other preset: LlamaIndex's question prompt
}
JUDGE = {"prompt": "{context}\nQuery: {question}\nScore it from 1 to 10.", "min_score": 7}


@functools.cache
def _composed_text(overrides: tuple[str, ...]) -> str:
    folder = Path(tempfile.mkdtemp(prefix="embedtune-config-"))
    try:
        compose(list(overrides), conf_dir=ROOT / "conf", output=folder / "params.yaml")
        return (folder / "params.yaml").read_text()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def raw_params(preset: str = "default") -> dict:
    """params.yaml as `dvc exp run -S <preset>` composes it, as a fresh dict to edit."""
    return yaml.safe_load(_composed_text(PRESETS[preset]))


def write(tmp_path: Path, raw) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def load_all(path: Path):
    return load_params(all_schemas(), path)


def dotted(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def at(raw: dict, path: tuple):
    """The mapping that holds the last key of `path`."""
    for part in path[:-1]:
        raw = raw[part]
    return raw


def _keys(raw, model, path: tuple):
    """(path, required) of every key of `raw` that `model`'s schema declares, nested included."""
    for name, field in type(model).model_fields.items():
        if name not in raw:
            continue
        key = (*path, name)
        yield key, field.is_required()
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _keys(raw[name], value, key)
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            yield from _keys(raw[name][0], value[0], (*key, 0))


@functools.cache
def keys_of_presets() -> dict[tuple, tuple[str, bool]]:
    """Every key of the composed presets: path -> (first preset holding it, required)."""
    found: dict[tuple, tuple[str, bool]] = {}
    for preset in PRESETS:
        raw = raw_params(preset)
        with tempfile.TemporaryDirectory(prefix="embedtune-config-") as folder:
            params = load_params(all_schemas(), write(Path(folder), raw))
        for section in SECTIONS:
            found.setdefault((section,), (preset, True))
            value = getattr(params, section)
            if isinstance(value, BaseModel):
                for key, required in _keys(raw[section], value, (section,)):
                    found.setdefault(key, (preset, required))
    return found


REQUIRED = sorted(
    ((preset, key) for key, (preset, required) in keys_of_presets().items() if required),
    key=lambda pk: dotted(pk[1]),
)
MAPPINGS = sorted(  # a total order: pytest-xdist's workers must collect the same list
    {(preset, key[:-1]) for preset, key in REQUIRED if len(key) > 1},
    key=lambda pk: (dotted(pk[1]), pk[0]),
)


# --- what loads -----------------------------------------------------------------------------


def test_committed_params_load_every_section():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for split in ("train", "validation"):  # a source's absent optional keys read as None
        raw["data"][split] = [
            {"url": None, "sha256": None, "pydoc_topics": None, **s} for s in raw["data"][split]
        ]
    params = load_all(ROOT / "params.yaml")
    assert set(vars(params)) == set(SECTIONS) == set(raw)
    for section in SECTIONS:
        value = getattr(params, section)
        dumped = value.model_dump() if isinstance(value, BaseModel) else value
        assert dumped == raw[section], section


def test_sources_of_every_kind_load(tmp_path):
    raw = raw_params()
    raw["data"]["train"] = [
        {"name": "statements.pdf", "pydoc_topics": ["for", "while"]},
        {"name": "paper.pdf", "url": "https://example.org/paper.pdf", "sha256": "ab" * 32},
    ]
    raw["data"]["validation"] = [{"name": "expressions.pdf", "pydoc_topics": ["lambda"]}]
    data = load_params({"data": DataConfig}, write(tmp_path, raw)).data
    topics, paper = data.train
    assert (topics.name, topics.pydoc_topics, topics.url, topics.sha256) == (
        "statements.pdf",
        ["for", "while"],
        None,
        None,
    )
    assert (paper.url, paper.pydoc_topics, paper.sha256) == (
        "https://example.org/paper.pdf",
        None,
        "ab" * 32,
    )
    assert data.validation == [Source(name="expressions.pdf", pydoc_topics=["lambda"])]


def test_int_is_accepted_for_float(tmp_path):
    raw = raw_params()
    raw["train"]["scale"] = 20
    raw["data"]["timeout_s"] = 5
    params = load_all(write(tmp_path, raw))
    assert type(params.train.scale) is float and params.train.scale == 20.0
    assert type(params.data.timeout_s) is float and params.data.timeout_s == 5.0


def test_load_params_returns_only_the_requested_sections(tmp_path):
    raw = raw_params()
    raw["train"]["lr"] = -1.0  # broken, but not requested
    del raw["eval"]["bootstrap"]  # likewise
    path = write(tmp_path, raw)
    params = load_params({"seed": int, "chunk": ChunkConfig}, path)
    assert vars(params) == {"seed": raw["seed"], "chunk": ChunkConfig(**raw["chunk"])}
    assert not hasattr(params, "train")
    with pytest.raises(EmbedtuneError, match=r"train\.lr must be greater than 0"):
        load_params({"chunk": ChunkConfig, "train": all_schemas()["train"]}, path)


def test_sections_are_frozen(tmp_path):
    params = load_params({"chunk": ChunkConfig}, write(tmp_path, raw_params()))
    with pytest.raises(ValueError, match="frozen"):
        params.chunk.chunk_size = 1


def test_plug_in_sections_take_the_schema_of_the_part_they_name(tmp_path):
    params = load_all(write(tmp_path, raw_params("cached_mnrl")))
    assert type(params.train).__name__ == "FullConfig"
    assert type(params.train.loss).__name__ == "CachedMNRLConfig"
    params = load_all(write(tmp_path, raw_params("openai")))
    assert type(params.llm).__name__ == "OpenAIConfig"


@pytest.mark.parametrize("preset", ["default", "reference"])
def test_synth_presets_ask_for_no_keyword_queries_and_no_judge(tmp_path, preset):
    synth = load_params({"synth": SynthConfig}, write(tmp_path, raw_params(preset))).synth
    assert (synth.keyword_queries, synth.judge) == (0, None)
    assert (synth.min_keyword_words, synth.max_keyword_words) == (2, 6)
    assert "{context}" in synth.keyword_prompt and "{num_questions}" in synth.keyword_prompt


def test_a_synth_judge_mapping_loads(tmp_path):
    raw = raw_params()
    raw["synth"].update(judge=JUDGE, keyword_queries=3)
    judge = load_params({"synth": SynthConfig}, write(tmp_path, raw)).synth.judge
    assert (judge.prompt, judge.min_score) == (JUDGE["prompt"], 7)


# --- the file itself ------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "params.yaml"
    with pytest.raises(EmbedtuneError, match=r"params\.yaml not found.*dvc exp run"):
        load_params({"seed": int}, path)


def test_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(EmbedtuneError, match="not valid YAML") as info:
        load_params({"seed": int}, path)
    assert "\n" not in str(info.value)


def test_top_level_not_a_mapping(tmp_path):
    with pytest.raises(EmbedtuneError, match="the top level must be a mapping"):
        load_params({"seed": int}, write(tmp_path, [1, 2]))


def test_unknown_top_level_key(tmp_path):
    raw = raw_params()
    raw["trian"] = {}
    with pytest.raises(EmbedtuneError, match=r": unknown key trian \(known: seed, data,") as info:
        load_params({"seed": int}, write(tmp_path, raw))  # even when only seed is asked for
    assert "\n" not in str(info.value)


# --- every key is required ------------------------------------------------------------------


def test_absent_keys_cover_every_section_and_registered_schema():
    keys = {dotted(key) for _, key in REQUIRED}
    assert set(SECTIONS) <= keys
    from embedtune.synth.llm.base import BACKENDS
    from embedtune.train.losses import LOSSES
    from embedtune.train.methods.base import METHODS

    for registry, section in ((BACKENDS, "llm"), (METHODS, "train"), (LOSSES, "train.loss")):
        for name in registry.names():
            fields = registry.get(name).Config.model_fields
            assert {f"{section}.{f}" for f in fields} <= keys, name


@pytest.mark.parametrize(("preset", "key"), REQUIRED, ids=[f"{dotted(k)}@{p}" for p, k in REQUIRED])
def test_absent_key_is_an_error_naming_it(tmp_path, preset, key):
    raw = raw_params(preset)
    del at(raw, key)[key[-1]]
    path = write(tmp_path, raw)
    with pytest.raises(EmbedtuneError) as info:
        load_all(path)
    message = str(info.value)
    assert message.startswith(f"{path}: missing key {dotted(key)} ("), message
    assert "\n" not in message


def test_absent_section_is_an_error_naming_it_when_requested(tmp_path):
    raw = raw_params()
    del raw["chunk"]
    path = write(tmp_path, raw)
    assert load_params({"seed": int}, path).seed == raw["seed"]
    with pytest.raises(EmbedtuneError, match=r"params\.yaml: missing key chunk \(conf/"):
        load_params({"seed": int, "chunk": ChunkConfig}, path)


def test_optional_source_keys_may_be_absent(tmp_path):
    raw = raw_params()
    for source in raw["data"]["train"] + raw["data"]["validation"]:
        del source["sha256"]
    data = load_params({"data": DataConfig}, write(tmp_path, raw)).data
    assert [s.sha256 for s in data.train + data.validation] == [None, None]
    del raw["data"]["train"][0]["url"]
    with pytest.raises(EmbedtuneError, match="needs exactly one of url or pydoc_topics"):
        load_params({"data": DataConfig}, write(tmp_path, raw))


# --- unknown keys are refused ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "mapping"), MAPPINGS, ids=[f"{dotted(m)}@{p}" for p, m in MAPPINGS]
)
def test_unknown_key_is_refused(tmp_path, preset, mapping):
    raw = raw_params(preset)
    target = raw
    for part in mapping:
        target = target[part]
    target["foo"] = 1
    with pytest.raises(EmbedtuneError) as info:
        load_all(write(tmp_path, raw))
    assert str(info.value) == f"{tmp_path / 'params.yaml'}: unknown key {dotted(mapping)}.foo"


def test_unknown_keys_cover_every_mapping():
    assert {dotted(m) for _, m in MAPPINGS} >= {
        "data",
        "data.train[0]",
        "data.validation[0]",
        "chunk",
        "llm",
        "synth",
        "embed",
        "train",
        "train.loss",
        "eval",
    }


# --- a bad value is one line naming its key -------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "key", "value", "expected"),
    [
        ("default", "train.lr", -0.1, r"train\.lr must be greater than 0, got -0\.1"),
        ("default", "train.epochs", "four", r"train\.epochs must be a valid integer, got 'four'"),
        ("default", "train.lr", "fast", r"train\.lr must be a valid number, got 'fast'"),
        ("default", "train.bias", "yes", r"train\.bias must be a valid boolean, got 'yes'"),
        ("default", "train.optimizer", "lion", r"train\.optimizer must be 'adamw', 'adam' or"),
        ("default", "train.method", "lora", r"train\.method='lora' is not known \(known: adapt"),
        ("default", "train", [1, 2], r": train must be a mapping, got \[1, 2\]$"),
        ("2layer", "train.holdout_fraction", 0.0, r"train\.patience needs held-out questions"),
        ("default", "embed.model", 7, r"embed\.model must be a valid string, got 7"),
        ("default", "embed.model", "", r"embed\.model must have at least 1 character, got ''$"),
        ("default", "embed.device", "gpu", r"embed\.device must be 'auto', 'cpu' or 'cuda'"),
        ("default", "embed.devices", ["cuda:0"], r"embed\.devices must have at least 2 items"),
        ("default", "chunk", [1, 2], r": chunk must be a mapping, got \[1, 2\]$"),
        ("default", "chunk.extensions", ".pdf", r"chunk\.extensions must be a valid list"),
        ("default", "chunk.extensions", [".pdf", 3], r"chunk\.extensions\[1\] must be a valid st"),
        ("default", "chunk.chunk_size", 0, r"chunk\.chunk_size must be greater than 0, got 0"),
        ("default", "eval.metrics", [1], r"eval\.metrics must be a mapping, got \[1\]"),
        ("default", "eval.metrics", {"mrr": [0, 5]}, r"eval\.metrics\.mrr must list cut-offs >"),
        ("default", "eval.metrics", {"mrr": []}, r"eval\.metrics\.mrr must list cut-offs > 0"),
        ("default", "eval.metrics", {"mrr": [1.5]}, r"eval\.metrics\.mrr\[0\] must be a valid in"),
        ("default", "eval.metrics", {}, r"eval\.metrics must have at least 1 item, got \{\}$"),
        ("default", "eval.confidence", 1.0, r"eval\.confidence must be less than 1, got 1\.0"),
        ("default", "synth.prompt", "Ask {num_questions}", r"synth\.prompt must contain \{conte"),
        ("default", "synth.near_duplicate", 1.5, r"synth\.near_duplicate must be less than or"),
        (
            "default",
            "synth.keyword_queries",
            -1,
            r"synth\.keyword_queries must be greater than or equal to 0",
        ),
        (
            "default",
            "synth.keyword_queries",
            True,
            r"synth\.keyword_queries must be a valid integer, got True",
        ),
        (
            "default",
            "synth.keyword_prompt",
            "Keywords: {num_questions}",
            r"keyword_prompt must contain \{cont",
        ),
        (
            "default",
            "synth.keyword_prompt",
            "{context} {question}",
            r"no placeholder but \{context\}, \{num_q",
        ),
        (
            "default",
            "synth.keyword_prompt",
            "{context} {",
            r"synth\.keyword_prompt is not a valid template",
        ),
        (
            "default",
            "synth.min_keyword_words",
            0,
            r"synth\.min_keyword_words must be greater than 0, got 0",
        ),
        (
            "default",
            "synth.min_keyword_words",
            7,
            r"min_keyword_words \(7\) must not exceed synth\.max_key",
        ),
        ("default", "synth.judge", "yes", r"synth\.judge must be a mapping, got 'yes'"),
        (
            "default",
            "synth.judge",
            {**JUDGE, "min_score": 0},
            r"synth\.judge\.min_score must be greater than o",
        ),
        (
            "default",
            "synth.judge",
            {**JUDGE, "min_score": 11},
            r"synth\.judge\.min_score must be less than or e",
        ),
        (
            "default",
            "synth.judge",
            {**JUDGE, "min_score": 7.0},
            r"synth\.judge\.min_score must be a valid integ",
        ),
        (
            "default",
            "synth.judge",
            {"prompt": JUDGE["prompt"]},
            r"missing key synth\.judge\.min_score",
        ),
        ("default", "synth.judge", {**JUDGE, "model": "x"}, r"unknown key synth\.judge\.model$"),
        (
            "default",
            "synth.judge",
            {**JUDGE, "prompt": "{question}?"},
            r"judge\.prompt must contain \{context\}",
        ),
        (
            "default",
            "synth.judge",
            {**JUDGE, "prompt": "{context} {num_questions}"},
            r"but \{context\}, \{q",
        ),
        ("default", "llm.backend", "ollama", r"llm\.backend='ollama' is not known \(known: op"),
        ("default", "llm", "zephyr", r": llm must be a mapping, got 'zephyr'$"),
        ("default", "llm.temperature", -1, r"llm\.temperature must be greater than or equal to"),
        ("default", "data.timeout_s", 0, r"data\.timeout_s must be greater than 0, got 0"),
        ("default", "data.train", [], r"data\.train must list at least one document"),
        ("default", "data.train", "a.pdf", r"data\.train must be a valid list, got 'a\.pdf'"),
        ("default", "data.train", [{"name": 3, "url": "u"}], r"data\.train\[0\]\.name must be"),
        ("full", "train.loss.name", "triplet", r"train\.loss\.name='triplet' is not known \(kno"),
        ("full", "train.loss.scale", 0, r"train\.loss\.scale must be greater than 0, got 0"),
        ("full", "train.optimizer", "sgd", r"train\.optimizer must be 'adamw', got 'sgd'"),
        ("default", "mine.negative_ranks", [5, 3], r"mine\.negative_ranks must be \[first, l"),
        ("default", "mine.negatives", 40, r"mine\.negatives \(40\) must fit in mine\.negat"),
        ("default", "mine.seen_corpus_fraction", 1.0, r"mine\.seen_corpus_fraction must be les"),
        (
            "default",
            "train.selection_confidence",
            1,
            r"train\.selection_confidence must be less than 1",
        ),
        ("gist", "train.loss.margin_strategy", "both", r"train\.loss\.margin_strategy must be"),
        ("cached_mnrl", "train.loss.mini_batch_size", 0, r"train\.loss\.mini_batch_size must"),
        ("openai", "llm.concurrency", 0, r"llm\.concurrency must be greater than 0, got 0"),
    ],
)
def test_bad_value_is_one_line_naming_the_key(tmp_path, preset, key, value, expected):
    raw = raw_params(preset)
    parts = tuple(key.split("."))
    at(raw, parts)[parts[-1]] = value
    path = write(tmp_path, raw)
    with pytest.raises(EmbedtuneError, match=expected) as info:
        load_all(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("seed", True, r"seed must be a valid integer, got True"),
        ("train.epochs", True, r"train\.epochs must be a valid integer, got True"),
        ("chunk.chunk_size", False, r"chunk\.chunk_size must be a valid integer, got False"),
        ("train.lr", True, r"train\.lr must be a valid number, got True"),
        ("seed", "42", r"seed must be a valid integer, got '42'"),
        ("train.epochs", "4", r"train\.epochs must be a valid integer, got '4'"),
        ("train.epochs", 4.0, r"train\.epochs must be a valid integer, got 4\.0"),
        ("train.lr", "1e-3", r"train\.lr must be a valid number, got '1e-3'"),
        ("data.timeout_s", "60", r"data\.timeout_s must be a valid number, got '60'"),
        ("train.bias", 1, r"train\.bias must be a valid boolean, got 1"),
        ("embed.query_prefix", 0, r"embed\.query_prefix must be a valid string, got 0"),
        ("data.local_dir", 3, r"data\.local_dir must be a valid string, got 3"),
    ],
)
def test_strict_types(tmp_path, key, value, expected):
    """A bool is not an int, a string is not a number (nor a number a string)."""
    raw = raw_params()
    parts = tuple(key.split("."))
    at(raw, parts)[parts[-1]] = value
    with pytest.raises(EmbedtuneError, match=expected):
        load_all(write(tmp_path, raw))


# --- rules across keys ----------------------------------------------------------------------


@pytest.mark.parametrize("overlap", [256, 300])
def test_overlap_not_smaller_than_chunk_size(tmp_path, overlap):
    raw = raw_params()
    raw["chunk"].update(chunk_size=256, chunk_overlap=overlap)
    with pytest.raises(EmbedtuneError, match=r"chunk\.chunk_overlap .* chunk\.chunk_size \(256\)"):
        load_all(write(tmp_path, raw))


def edit_sources(tmp_path: Path, edit) -> Path:
    raw = raw_params("cpu")  # pydoc sources
    edit(raw["data"])
    return write(tmp_path, raw)


def test_source_with_url_and_topics(tmp_path):
    def edit(data):
        data["train"][0]["url"] = "https://example.org/doc.pdf"

    path = edit_sources(tmp_path, edit)
    with pytest.raises(EmbedtuneError, match="'simple-statements.pdf' needs exactly one of url"):
        load_params({"data": DataConfig}, path)


def test_source_with_neither_url_nor_topics(tmp_path):
    def edit(data):
        del data["validation"][0]["pydoc_topics"]

    path = edit_sources(tmp_path, edit)
    with pytest.raises(EmbedtuneError, match="'expressions.pdf' needs exactly one of url or pyd"):
        load_params({"data": DataConfig}, path)


def test_duplicate_document_name(tmp_path):
    def edit(data):
        data["validation"][0]["name"] = data["train"][0]["name"]

    path = edit_sources(tmp_path, edit)
    with pytest.raises(EmbedtuneError, match="'simple-statements.pdf' is used twice in data"):
        load_params({"data": DataConfig}, path)


@pytest.mark.parametrize("name", ["../escape.pdf", "sub/doc.pdf", ".hidden.pdf"])
def test_document_name_must_be_a_plain_file_name(tmp_path, name):
    def edit(data):
        data["train"][0]["name"] = name

    path = edit_sources(tmp_path, edit)
    with pytest.raises(EmbedtuneError, match="must be a plain file name"):
        load_params({"data": DataConfig}, path)


def test_data_local_preset_validates(tmp_path):
    raw = raw_params("local")
    assert raw["data"]["train"] == [] and raw["data"]["validation"] == []
    data = load_params({"data": DataConfig}, write(tmp_path, raw)).data
    assert data.local_dir == "documents"
    assert 0 < data.validation_fraction < 1


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            {"train": [{"name": "a.pdf", "url": "a.pdf"}]},
            r"data\.local_dir replaces data\.train and data\.validation",
        ),
        ({"validation_fraction": 1.0}, r"data\.validation_fraction must be less than 1, got 1\.0"),
        ({"validation_fraction": 0.0}, r"data\.validation_fraction must be greater than 0"),
        ({"local_dir": ""}, r"data\.local_dir must name a folder"),
        ({"local_dir": None}, r"data\.train must list at least one document"),
    ],
)
def test_data_local_validation(tmp_path, edit, expected):
    raw = raw_params("local")
    raw["data"].update(edit)
    with pytest.raises(EmbedtuneError, match=expected):
        load_params({"data": DataConfig}, write(tmp_path, raw))


def test_error_names_the_file(tmp_path):
    raw = raw_params()
    raw["eval"]["metrics"] = {"hit_rate": [0, 5]}
    path = write(tmp_path, raw)
    with pytest.raises(EmbedtuneError) as info:
        load_params({"eval": EvalConfig}, path)
    assert str(info.value) == f"{path}: eval.metrics.hit_rate must list cut-offs > 0, got [0, 5]"


def test_parse_section_on_its_own():
    """What a stage uses for a section it does not read from params.yaml (a saved config)."""
    bounds = {"max_file_mb": 1, "max_pages": 2, "max_text_mb": 0.5, "max_html_depth": 4}
    values = {"chunk_size": 9, "chunk_overlap": 1, "on_bad_document": "skip", **bounds}
    chunk = parse_section("chunk", {**values, "extensions": []}, ChunkConfig)
    assert chunk == ChunkConfig(**values, extensions=[])
    with pytest.raises(EmbedtuneError, match=r"^saved\.json: missing key chunk\.extensions \("):
        parse_section("chunk", values, ChunkConfig, "saved.json")
    assert parse_section("seed", 3, int) == 3
    with pytest.raises(EmbedtuneError, match=r"^params\.yaml: seed must be a valid integer"):
        parse_section("seed", 3.5, int)


def test_copy_of_a_section_keeps_the_rules():
    """`cfg(...)` of the tests validates its updates as params.yaml would."""
    from tests.helpers import cfg

    assert cfg("chunk", chunk_size=64).chunk_size == 64
    with pytest.raises(ValueError, match="chunk_overlap"):
        cfg("chunk", chunk_size=16, chunk_overlap=32)
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        cfg("train", k=5)
