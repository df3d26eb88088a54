"""Stage `select` (`python -m embedtune.select`): the retriever to ship, models/retriever/.

The candidates, their scoring and the selection rule are the shared library's
(`embedtune.retrieval`), so `eval` scores exactly what `select` compared.
"""
