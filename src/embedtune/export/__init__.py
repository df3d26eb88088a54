"""Stage `export`: the tuned model as one sentence-transformers folder, with a model card.

Usage: python -m embedtune.export   (reads params.yaml; run by `dvc repro` after `eval`)

Writes models/export/model/, which `SentenceTransformer(folder)` loads and whose `encode_query`
and `encode_document` give the embeddings `eval` scored, whatever `train.method`
(`embedtune.export.model`); its README.md is the model card (`embedtune.export.card`). Beside it,
models/export/retriever/ holds the retriever `select` shipped, ready to serve: its chunks with
their sources, dense vectors, bm25s index and fusion settings (`embedtune.export.retriever`).
Layout and loading: docs/using-the-model.md.
"""
