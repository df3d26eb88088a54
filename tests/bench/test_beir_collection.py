"""bench/beir_collection.py writes what the project's BEIR reader reads back."""

from __future__ import annotations

import importlib.util

from embedtune.retrieval.beir import load_benchmark
from tests.helpers import ROOT

spec = importlib.util.spec_from_file_location("beir_collection", ROOT / "bench/beir_collection.py")
beir_collection = importlib.util.module_from_spec(spec)
spec.loader.exec_module(beir_collection)


def test_written_collection_reads_back(tmp_path):
    docs = [("1", "compact memories have flexible capacities"), ("2", "an analogue computer")]
    queries = [("7", "digital storage"), ("8", "a query nobody judged")]
    qrels = [("7", "2", 0), ("7", "1", 1), ("7", "1", 1)]  # ir_datasets may repeat a judgement
    counts = beir_collection.write_beir(docs, queries, qrels, tmp_path / "npl")
    assert counts == {"documents": 2, "queries": 1, "qrels": 2}
    bench = load_benchmark(tmp_path / "npl")
    assert bench.corpus == {
        "1": "compact memories have flexible capacities",
        "2": "an analogue computer",
    }
    assert bench.queries == {"7": "digital storage"}  # the unjudged query is left out
    assert (tmp_path / "npl/qrels/test.tsv").read_text().splitlines() == [
        "query-id\tcorpus-id\tscore",
        "7\t1\t1",
        "7\t2\t0",
    ]
