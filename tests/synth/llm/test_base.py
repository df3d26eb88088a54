"""The backend registry: `llm.backend` picks the config schema and the client, nothing loads
until `load()`, and a new backend is one registered class."""

from __future__ import annotations

import time
from typing import Literal

import pytest
import yaml

from embedtune.config import parse_section
from embedtune.errors import EmbedtuneError
from embedtune.synth.llm.answers import answer_key
from embedtune.synth.llm.base import (
    BACKENDS,
    ChatBackend,
    Failure,
    Generation,
    LLMConfig,
    backend_config,
    make_chat,
)
from embedtune.synth.llm.openai_chat import OpenAIChat, OpenAIConfig
from embedtune.synth.llm.transformers_chat import TransformersChat, TransformersConfig
from tests.helpers import ROOT, cfg

LLM_CONF = sorted((ROOT / "conf" / "llm").glob("*.yaml"))


def test_the_shipped_backends_are_registered():
    assert BACKENDS.names() == ["openai", "transformers"]
    assert BACKENDS.get("openai") is OpenAIChat
    assert BACKENDS.get("transformers") is TransformersChat


def test_make_chat_picks_the_backend_without_loading():
    # zephyr in 4-bit on CUDA: loading it here would fail or download gigabytes.
    zephyr = cfg("llm", "llm=zephyr_4bit")
    server = cfg("llm", "llm=openai_server", base_url="http://127.0.0.1:9/v1")  # nothing there
    started = time.perf_counter()
    local = make_chat(zephyr, seed=3)
    remote = make_chat(server, seed=4)
    assert time.perf_counter() - started < 1
    assert type(local) is TransformersChat and local.model is None and local.seed == 3
    assert type(remote) is OpenAIChat and remote.client is None and remote.seed == 4
    assert remote.cfg.base_url == "http://127.0.0.1:9/v1"


def test_backend_config_is_the_schema_of_the_named_backend():
    assert backend_config({"backend": "openai"}) is OpenAIConfig
    assert backend_config({"backend": "transformers", "model": "m"}) is TransformersConfig


@pytest.mark.parametrize("raw", [{"backend": "vllm"}, {"model": "m"}, "transformers", None])
def test_an_unknown_backend_is_one_line_naming_llm_backend(raw):
    with pytest.raises(EmbedtuneError) as err:
        backend_config(raw)
    message = str(err.value)
    assert "llm.backend" in message
    assert message.endswith("(known: openai, transformers)")
    assert "\n" not in message


def test_every_conf_llm_file_validates_against_its_backend():
    assert [p.stem for p in LLM_CONF] == ["openai_server", "qwen_coder", "smollm2", "zephyr_4bit"]
    for path in LLM_CONF:
        raw = yaml.safe_load(path.read_text())
        parsed = parse_section("llm", raw, backend_config, path)
        assert type(parsed) is BACKENDS.get(raw["backend"]).Config
        assert parsed.model_dump() == raw  # every key comes from the file
    # Every registered backend has a config file to select it with.
    shipped = {yaml.safe_load(p.read_text())["backend"] for p in LLM_CONF}
    assert shipped == set(BACKENDS.names())


def test_a_key_of_another_backend_is_refused():
    raw = yaml.safe_load((ROOT / "conf" / "llm" / "smollm2.yaml").read_text())
    with pytest.raises(EmbedtuneError, match=r"^params.yaml: unknown key llm.base_url$"):
        parse_section("llm", {**raw, "base_url": "http://x/v1"}, backend_config)
    del raw["kv_cache"]
    with pytest.raises(EmbedtuneError, match=r"params.yaml: missing key llm.kv_cache"):
        parse_section("llm", raw, backend_config)


# --- a new backend: one registered class ---------------------------------------------------------


class EchoConfig(LLMConfig):
    backend: Literal["echo"]
    shout: bool


class EchoChat(ChatBackend):
    """Answers with the message itself: a backend needs nothing more than this."""

    Config = EchoConfig
    loads = 0

    def load(self) -> EchoChat:
        EchoChat.loads += 1
        return self

    def generate(self, messages: list[str]) -> list[Generation | Failure]:
        return [
            Generation(m.upper() if self.cfg.shout else m, len(m.split()))
            if m
            else Failure("generation_error: empty")
            for m in messages
        ]


@pytest.fixture
def echo_backend():
    BACKENDS.register("echo")(EchoChat)
    yield EchoChat
    BACKENDS.unregister("echo")


ECHO = {
    "backend": "echo",
    "model": "echo-1",
    "batch_size": 2,
    "max_new_tokens": 8,
    "temperature": 0.0,
    "shout": True,
}


def test_a_registered_backend_is_found_by_name(echo_backend):
    assert "echo" in BACKENDS.names()
    parsed = parse_section("llm", ECHO, backend_config)
    assert type(parsed) is EchoConfig
    chat = make_chat(parsed, seed=0)
    assert type(chat) is EchoChat and EchoChat.loads == 0
    assert chat.load().generate(["a b", ""]) == [
        Generation("A B", 2),
        Failure("generation_error: empty"),
    ]
    # Its own key shapes the answer cache's key like any other.
    quiet = parsed.model_copy(update={"shout": False})
    assert answer_key(parsed, 0, "p") != answer_key(quiet, 0, "p")


def test_an_unregistered_backend_is_gone(echo_backend):
    BACKENDS.unregister("echo")
    with pytest.raises(EmbedtuneError, match="llm.backend='echo' is not known"):
        backend_config(ECHO)


def test_a_name_cannot_be_taken_twice(echo_backend):
    BACKENDS.register("echo")(EchoChat)  # the same class again is harmless
    with pytest.raises(ValueError, match="llm.backend='echo' is registered twice"):
        BACKENDS.register("echo")(OpenAIChat)


def test_a_backend_must_implement_load_and_generate():
    class Half(ChatBackend):
        Config = EchoConfig

        def load(self):
            return self

    with pytest.raises(TypeError, match="generate"):
        Half(parse_section("llm", ECHO, EchoConfig), 0)
