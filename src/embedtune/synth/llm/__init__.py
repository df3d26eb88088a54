"""LLM backends that write the questions, the answer cache, and the types they share.

A backend is one module here that registers a `ChatBackend` subclass with `BACKENDS` under the
name `llm.backend` selects, plus one YAML file in `conf/llm/` (see `base.py`).
"""
