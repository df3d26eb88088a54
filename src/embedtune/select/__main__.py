"""Stage `select`: choose the retriever to ship, on the held-out training questions only.

Usage: python -m embedtune.select   (reads params.yaml; run by `dvc repro`)

The candidates (`embedtune.retrieval.retrievers`): the dense base model, the tuned model, BM25
over the chunks (`retrieve.bm25`), and every fusion of a dense model with BM25 that
`retrieve.fusion` lists. Each ranks the whole training corpus for the held-out slice of the
training questions, the same slice that picked the epoch in `train`; the best MRR@10 is shipped
if it beats the dense base beyond the slice's noise (`train.selection_confidence`), else the
dense base (`embedtune.retrieval.selection.select_retriever`). `retrieve.ship` names a
candidate to ship instead. Validation questions and benchmark queries decide nothing. Writes
models/retriever/retriever.json (what to rebuild: dense model, BM25 settings, fusion) and
metrics/select.json (each candidate's held-out MRR@10, the verdict).
"""

from __future__ import annotations

from embedtune import io, progress
from embedtune.config import EmbedConfig, RetrieveConfig, load_params
from embedtune.retrieval.bootstrap import format_interval
from embedtune.retrieval.evaluation import evaluate
from embedtune.retrieval.retrievers import candidates
from embedtune.retrieval.selection import HELDOUT_K, HELDOUT_METRIC, HELDOUT_NAME, select_retriever
from embedtune.retrieval.tuned import TunedModel
from embedtune.stage import run_stage
from embedtune.train.methods.base import TrainingInputs, get_method, load_tuned, method_config

PARAMS = {"seed": int, "embed": EmbedConfig, "train": method_config, "retrieve": RetrieveConfig}


def heldout_verdict(params, inputs: TrainingInputs, tuned: TunedModel) -> dict:
    """Every candidate's held-out MRR@10 and the selection rule's verdict; without held-out
    questions (train.holdout_fraction 0) the tuned model is shipped, as `train` keeps it."""
    unit = get_method(params.train.method).heldout_unit
    _, held = inputs.question_split(params.train, params.seed, unit)
    if not held:
        return {"best": None, "shipped": "tuned", "heldout_questions": 0}
    spec = {HELDOUT_METRIC: [HELDOUT_K]}
    with progress.task("select: held-out questions", len(held), "questions"):
        result = evaluate(inputs.embeddings(), inputs.dataset, tuned, spec, held, params.retrieve)
    values = {name: metrics[HELDOUT_NAME] for name, metrics in result.per_query.items()}
    verdict = select_retriever(values, params.train.selection_confidence, params.seed)
    return {**verdict, "heldout_questions": len(held)}


def verdict_lines(verdict: dict) -> list[str]:
    lines = [
        f"  {name}: held-out {HELDOUT_NAME} {v:.4f}"
        for name, v in verdict.get(HELDOUT_NAME, {}).items()
    ]
    gain = verdict.get(f"gain_{HELDOUT_NAME}")
    if gain is not None:
        lines.append(f"best {verdict['best']}: {format_interval(gain)} over base")
    how = "forced by retrieve.ship" if verdict.get("forced") else "the selection rule"
    lines.append(f"shipped: {verdict['shipped']} ({how})")
    return lines


def main() -> None:
    params = load_params(PARAMS)
    cfg: RetrieveConfig = params.retrieve
    by_name = {c.name: c for c in candidates(cfg)}  # bad settings stop before a model loads
    tuned = load_tuned(io.TUNED_DIR, params.embed)
    verdict = heldout_verdict(params, TrainingInputs.stored(params.embed), tuned)
    if cfg.ship is not None:
        verdict.update(shipped=cfg.ship, forced=True)
    shipped = by_name[verdict["shipped"]]
    description = shipped.describe()
    description["bm25"] = cfg.bm25.model_dump() if shipped.lexical else None
    with io.atomic_folder(io.RETRIEVER_DIR) as folder:
        io.write_json(folder / io.RETRIEVER_FILE.name, description)
    io.write_json(io.METRICS_DIR / "select.json", verdict)
    print("\n".join(verdict_lines(verdict)))


if __name__ == "__main__":
    run_stage("select", main)
