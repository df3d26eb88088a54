"""Inputs of the synth tests: SmolLM2's own answers, and chats sharing the loaded SmolLM2."""

from __future__ import annotations

from embedtune.synth.llm.transformers_chat import TransformersChat
from tests.helpers import cfg

# Verbatim answers of SmolLM2-135M-Instruct to the synth prompt on Python reference chunks.
CLEAN = '1. What is the "for" statement?\n2. How does the "for" statement iterate over a sequence?'
RAMBLING = (
    "1. What is the purpose of lambda expressions?\n2. How to create a lambda expression?\n\n"
    "Here's the answer:\n\n**1. What is the purpose of lambda expressions?**\n\n"
    "The purpose of lambda expressions is to create anonymous functions."
)
REPEATED = '1. What is the "try" statement?\n2. What is the "try" statement?\n\nHere is the answer:'
NO_QUESTION = 'The text provides a concise explanation of the "with" statement.'


def sharing(smollm2: TransformersChat, seed: int = 0, **updates) -> TransformersChat:
    """A chat with other settings on the loaded SmolLM2 (the session fixture stays untouched)."""
    chat = TransformersChat(cfg("llm", **updates), seed=seed)
    chat.model, chat.tokenizer = smollm2.model, smollm2.tokenizer
    return chat
