"""Stage `retrieve` (`python -m embedtune.retrieve`): the retriever to ship, models/retriever/.

The retrievers, fusions and metrics it compares are shared with `eval`: `embedtune.retrieval`.
"""
