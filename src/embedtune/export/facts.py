"""What the model card reports, read from the files the pipeline wrote (and git and dvc.lock).

Every report file is read before a model loads, so a stage run too early stops at once with one
line naming the missing file and the stage that writes it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import yaml

from embedtune import io
from embedtune.export.card import CardFacts

# (card field, file, the stage that writes it), latest stage first: its `dvc repro` makes all
REPORTS = [
    ("validation", io.METRICS_DIR / "eval.json", "eval"),
    ("validation_delta", io.METRICS_DIR / "eval_delta.json", "eval"),
    ("seen", io.METRICS_DIR / "eval_seen.json", "eval"),
    ("benchmarks", io.METRICS_DIR / "benchmarks.json", "eval"),
    ("select", io.METRICS_DIR / "select.json", "select"),
    ("retriever", io.RETRIEVER_FILE, "select"),
    ("training", io.METRICS_DIR / "train" / "metrics.json", "train"),
    ("manifest", io.MANIFEST, "download"),
]
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def gather(params: SimpleNamespace) -> CardFacts:
    """The card's facts from params.yaml's sections (`embed`, `train`, `llm`, `retrieve`,
    `eval`) and the pipeline's report files."""
    reports = {name: io.read_json(path, stage=stage) for name, path, stage in REPORTS}
    model = params.embed.model
    return CardFacts(
        method=params.train.method,
        train=params.train.model_dump(),
        embed=params.embed.model_dump(),
        llm=params.llm,
        language=params.retrieve.bm25.language,
        confidence=params.eval.confidence,
        commit=git_commit(),
        tuned_md5=locked_md5(io.TUNED_DIR),
        base_hub_id=model if HUB_ID.fullmatch(model) and not Path(model).exists() else None,
        synth=question_counts(),
        **reports,
    )


def question_counts() -> dict:
    """Per split, from synth's question files (not metrics/synth.json, whose speed figures
    change on every generation): the chunks with questions, the questions, the chunks
    without one."""
    failures = io.read_json(io.QA_DIR / "failures.json")
    counts = {}
    for split in io.SPLITS:
        dataset = io.load_qa(split)
        counts[split] = {
            "chunks": len(dataset["corpus"]),
            "questions": len(dataset["queries"]),
            "failed_chunks": len(failures.get(split, {})),
        }
    return counts


def git_commit() -> str:
    """HEAD's commit in the working directory, or "unknown" outside a git repository."""
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:  # no git
        return "unknown"
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def locked_md5(out: Path, lock: Path = io.LOCK_FILE) -> str:
    """The md5 dvc.lock records for the output `out`, or "unknown" (no dvc.lock, or a stage
    run by hand before DVC recorded it)."""
    try:
        stages = yaml.safe_load(lock.read_text()).get("stages", {})
    except (OSError, AttributeError, yaml.YAMLError):
        return "unknown"
    for stage in stages.values():
        for entry in stage.get("outs", []):
            if entry.get("path") == out.as_posix() and entry.get("md5"):
                return entry["md5"]
    return "unknown"
