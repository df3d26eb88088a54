"""What every LLM backend shares: its answers (`Generation`, `Failure`), its config, its registry.

To add a backend: one module in this package with

    class MyConfig(LLMConfig):        # the backend's own keys, all set in its conf/llm/*.yaml
        backend: Literal["mine"]
        endpoint: str

    @BACKENDS.register("mine")
    class MyChat(ChatBackend):
        Config = MyConfig
        def load(self): ...            # heavy work here, not in __init__
        def generate(self, messages): ...  # one Generation or Failure per message, in order

and `conf/llm/mine.yaml` with `backend: mine` and every key. Every key of the config shapes the
answer cache's key unless the class lists it in `not_in_answer_key`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field

from embedtune.config import Section
from embedtune.registry import Registry

BACKENDS: Registry[type[ChatBackend]] = Registry("llm.backend", "embedtune.synth.llm")


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int


@dataclass(frozen=True)
class Failure:
    reason: str


class LLMConfig(Section):
    """Keys of every backend."""

    # Keys that cannot change an answer (speed and plumbing only): left out of the cache key.
    not_in_answer_key: ClassVar[frozenset[str]] = frozenset({"batch_size"})

    backend: str
    model: str = Field(min_length=1)
    batch_size: int = Field(gt=0)
    max_new_tokens: int = Field(gt=0)
    temperature: float = Field(ge=0)


class ChatBackend(ABC):
    """User messages in, completions out. Construct cheaply; `load()` does the work."""

    Config: ClassVar[type[LLMConfig]]

    def __init__(self, cfg: LLMConfig, seed: int):
        self.cfg = cfg
        self.seed = seed

    @abstractmethod
    def load(self) -> ChatBackend: ...

    @abstractmethod
    def generate(self, messages: list[str]) -> list[Generation | Failure]: ...


def backend_config(raw: Any) -> type[LLMConfig]:
    """The schema of the `llm` section: that of the backend it names."""
    name = raw.get("backend") if isinstance(raw, dict) else None
    return BACKENDS.get(name).Config


def make_chat(cfg: LLMConfig, seed: int) -> ChatBackend:
    """The client of `llm.backend`, not loaded yet."""
    return BACKENDS.get(cfg.backend)(cfg, seed)
