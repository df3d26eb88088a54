"""Stage `synth` (`python -m embedtune.synth`): a local LLM writes questions per chunk, data/qa/.

Parts: `qa` (the prompt, batching and the QA dataset), `questions` (parsing and filtering what
the LLM wrote), `llm/` (chat backends and the answer cache).
"""
