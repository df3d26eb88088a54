"""Loading the local LLM: GPU-only settings fail at once, with one line, on a CPU machine."""

from __future__ import annotations

import time

import pytest
import torch

from embedtune.config import LLMConfig
from embedtune.errors import EmbedtuneError
from embedtune.llm import make_chat

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")


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
