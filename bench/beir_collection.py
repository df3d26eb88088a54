"""Write an `ir_datasets` collection in BEIR layout, the form `eval.benchmarks` and the quality
benchmarks read: corpus.jsonl, queries.jsonl and qrels/test.tsv.

Usage: pip install ir_datasets   (not a dependency of the project; it downloads the collection)
       python bench/beir_collection.py vaswani benchmarks/vaswani_npl
then   make bench-quality COLLECTION=benchmarks/vaswani_npl

Vaswani NPL (`vaswani` in ir_datasets: 11,429 abstracts, 93 queries) is the collection our
quality figures were measured on. Queries without a judged document are left out, as BEIR does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path


def write_beir(
    docs: Iterable[tuple[str, str]],
    queries: Iterable[tuple[str, str]],
    qrels: Iterable[tuple[str, str, int]],
    folder: Path,
) -> dict[str, int]:
    """(doc id, text), (query id, text) and (query id, doc id, grade) as a BEIR folder.

    Returns the counts written; judged queries only."""
    judged = sorted(set(qrels), key=lambda row: (row[0], row[1]))
    judged_queries = {query_id for query_id, _, _ in judged}
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    counts = {"documents": 0, "queries": 0, "qrels": len(judged)}
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as out:
        for doc_id, text in docs:
            out.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
            counts["documents"] += 1
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as out:
        for query_id, text in queries:
            if query_id in judged_queries:
                out.write(json.dumps({"_id": query_id, "text": text}) + "\n")
                counts["queries"] += 1
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{grade}" for q, d, grade in judged]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="an ir_datasets name, e.g. vaswani")
    parser.add_argument("folder", type=Path, help="where to write the BEIR layout")
    args = parser.parse_args()
    try:
        import ir_datasets
    except ImportError:
        sys.exit("ir_datasets is not installed: pip install ir_datasets")
    dataset = ir_datasets.load(args.dataset)
    counts = write_beir(
        ((doc.doc_id, doc.text) for doc in dataset.docs_iter()),
        ((query.query_id, query.text) for query in dataset.queries_iter()),
        ((qrel.query_id, qrel.doc_id, int(qrel.relevance)) for qrel in dataset.qrels_iter()),
        args.folder,
    )
    print(f"{args.folder}: {json.dumps(counts)}")


if __name__ == "__main__":
    main()
