"""The reference recipe's question writer settings (`llm=zephyr_4bit`: 4-bit NF4 through
bitsandbytes, bfloat16) run for real on a CPU, with SmolLM2-135M saved in transformers format in
place of zephyr-7b-beta, through the whole `synth` stage."""

from __future__ import annotations

import json

import pytest
import yaml

import embedtune.synth.__main__ as synth
from embedtune.compose import compose
from embedtune.io import write_jsonl
from embedtune.synth.llm.transformers_chat import TransformersChat
from tests.helpers import ROOT, cfg

TEXTS = [
    "A for loop runs its body once for every item of a sequence, such as a list or a string.",
    "A dictionary maps hashable keys to values; looking a key up takes constant time on average.",
]


@pytest.fixture(scope="module")
def smollm2_folder(tmp_path_factory, smollm2):
    """SmolLM2-135M in transformers format (safetensors), as a hub model folder is: the 4-bit
    path quantizes float weights on load, which a GGUF file does not give."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("smollm2-transformers")
    config = smollm2.model.config
    config.__dict__.pop("quantization_config", None)  # the GGUF loader's marker, not a format
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(smollm2.model.state_dict())
    plain.save_pretrained(folder)
    smollm2.tokenizer.save_pretrained(folder)
    return folder


def recipe_on_cpu(folder) -> dict:
    """`llm=zephyr_4bit` as composed, with the small model and the CPU."""
    return {"model": str(folder), "device": "cpu", "max_new_tokens": 24, "batch_size": 2}


def test_the_recipe_loads_nf4_layers_on_a_cpu(smollm2_folder, capsys):
    from bitsandbytes.nn import Linear4bit

    chat = TransformersChat(cfg("llm", "llm=zephyr_4bit", **recipe_on_cpu(smollm2_folder)), 0)
    chat.load()
    assert "4bit on a CPU" in capsys.readouterr().out
    layers = [m for m in chat.model.modules() if isinstance(m, Linear4bit)]
    assert len(layers) == 7 * chat.model.config.num_hidden_layers  # q k v o gate up down
    assert layers[0].weight.quant_type == "nf4"
    (answer,) = chat.generate(["Write one question about Python for loops."])
    assert answer.new_tokens > 0 and answer.text.strip()


def test_synth_runs_the_recipes_llm_settings_in_4bit_on_a_cpu(
    smollm2_folder, tmp_path, monkeypatch, capsys
):
    work = tmp_path / "work"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMBEDTUNE_CACHE_DIR", str(tmp_path / "cache"))
    for split, texts in {"train": TEXTS, "validation": TEXTS[:1]}.items():
        rows = [{"id": f"{split}-{i}", "text": t} for i, t in enumerate(texts)]
        write_jsonl(work / "data/chunks" / f"{split}.jsonl", rows)
    compose(["experiment=cpu", "llm=zephyr_4bit", "synth.max_failure_rate=1.0"], ROOT / "conf",
            work / "params.yaml")  # fmt: skip
    params = yaml.safe_load((work / "params.yaml").read_text())
    assert params["llm"]["quantization"] == "4bit" and params["llm"]["dtype"] == "bfloat16"
    params["llm"].update(recipe_on_cpu(smollm2_folder))
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(work)
    synth.main()
    assert "llm.quantization=4bit on a CPU" in capsys.readouterr().out
    metrics = json.loads((work / "metrics/synth.json").read_text())
    assert metrics["train"]["chunks"] == 2 and metrics["train"]["tokens_generated"] > 0
    dataset = json.loads((work / "data/qa/train.json").read_text())
    assert set(dataset["corpus"]) <= {"train-0", "train-1"}
    assert all(q.strip().endswith("?") for q in dataset["queries"].values())
