"""Stage `eval` (`python -m embedtune.eval`): base vs tuned vs shipped retriever, metrics/.

Parts: `tables` (the per-query and hit-rate tables it writes), `report` (the tables it prints),
`examples` (metrics/examples.md), `tracking` (optional MLflow logging). Scoring itself is the
shared library's: `embedtune.retrieval.evaluation`.
"""
