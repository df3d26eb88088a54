"""Stage `eval` (`python -m embedtune.eval`): base vs tuned vs shipped retriever, metrics/.

Parts: `evaluation` (scoring a split or a benchmark), `report` (the tables it prints),
`examples` (metrics/examples.md), `tracking` (optional MLflow logging).
"""
