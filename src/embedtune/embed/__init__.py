"""Stage `embed` (`python -m embedtune.embed`): frozen base-model embeddings, data/embeddings/.

The encoder and the embeddings file format are shared with later stages: `embedtune.embeddings`.
"""
