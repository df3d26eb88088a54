"""The synth section's keyword-query and judge keys: every one required, templates checked,
bounds enforced, the judge mapping strict, each problem one line naming its key."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from embedtune.compose import compose
from embedtune.config import SynthConfig, load_params
from embedtune.errors import EmbedtuneError
from tests.conftest import ROOT

JUDGE = {"prompt": "{context}\nQuery: {question}\nScore it from 1 to 10.", "min_score": 7}


@functools.cache
def _synth(preset: str) -> str:
    folder = Path(tempfile.mkdtemp(prefix="embedtune-synth-config-"))
    try:
        compose([f"synth={preset}"], conf_dir=ROOT / "conf", output=folder / "params.yaml")
        return yaml.safe_dump(yaml.safe_load((folder / "params.yaml").read_text())["synth"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def load(tmp_path: Path, preset: str = "default", **updates) -> SynthConfig:
    """The synth section of `preset` as composed from conf/, with `updates`, through params.yaml."""
    synth = {**yaml.safe_load(_synth(preset)), **updates}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"synth": synth}))
    return load_params({"synth": SynthConfig}, path).synth


@pytest.mark.parametrize("preset", ["default", "reference"])
def test_both_presets_ask_for_no_keyword_queries_and_no_judge(tmp_path, preset):
    synth = load(tmp_path, preset)
    assert (synth.keyword_queries, synth.judge) == (0, None)
    assert (synth.min_keyword_words, synth.max_keyword_words) == (2, 6)
    assert "{context}" in synth.keyword_prompt and "{num_questions}" in synth.keyword_prompt


def test_a_judge_mapping_loads(tmp_path):
    judge = load(tmp_path, judge=JUDGE, keyword_queries=3).judge
    assert (judge.prompt, judge.min_score) == (JUDGE["prompt"], 7)


@pytest.mark.parametrize(
    "key", ["keyword_queries", "keyword_prompt", "min_keyword_words", "max_keyword_words", "judge"]
)
def test_every_new_key_is_required(tmp_path, key):
    synth = yaml.safe_load(_synth("default"))
    del synth[key]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"synth": synth}))
    with pytest.raises(EmbedtuneError, match=rf"missing key synth\.{key} \(conf/ sets every"):
        load_params({"synth": SynthConfig}, path)


@pytest.mark.parametrize(
    ("updates", "expected"),
    [
        ({"keyword_queries": -1}, r"synth\.keyword_queries must be greater than or equal to 0"),
        ({"keyword_queries": True}, r"synth\.keyword_queries must be a valid integer, got True"),
        ({"keyword_prompt": "Keywords: {num_questions}"}, r"keyword_prompt must contain \{cont"),
        ({"keyword_prompt": "{context} {question}"}, r"no placeholder but \{context\}, \{num_q"),
        ({"keyword_prompt": "{context} {"}, r"synth\.keyword_prompt is not a valid template"),
        ({"min_keyword_words": 0}, r"synth\.min_keyword_words must be greater than 0, got 0"),
        ({"min_keyword_words": 7}, r"min_keyword_words \(7\) must not exceed synth\.max_key"),
        ({"judge": "yes"}, r"synth\.judge must be a mapping, got 'yes'"),
        ({"judge": {**JUDGE, "min_score": 0}}, r"synth\.judge\.min_score must be greater than o"),
        ({"judge": {**JUDGE, "min_score": 11}}, r"synth\.judge\.min_score must be less than or e"),
        ({"judge": {**JUDGE, "min_score": 7.0}}, r"synth\.judge\.min_score must be a valid integ"),
        ({"judge": {"prompt": JUDGE["prompt"]}}, r"missing key synth\.judge\.min_score"),
        ({"judge": {**JUDGE, "model": "x"}}, r"unknown key synth\.judge\.model$"),
        ({"judge": {**JUDGE, "prompt": "{question}?"}}, r"judge\.prompt must contain \{context\}"),
        ({"judge": {**JUDGE, "prompt": "{context} {num_questions}"}}, r"but \{context\}, \{q"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_key(tmp_path, updates, expected):
    with pytest.raises(EmbedtuneError, match=expected) as info:
        load(tmp_path, **updates)
    assert str(info.value).startswith(f"{tmp_path / 'params.yaml'}: ")
    assert "\n" not in str(info.value)
