"""Benchmarks embedded once per model: `eval` keeps the base model's rows, and a `full` tuned
model's, in `<cache>/benchmarks/`, with the real offline model (all-MiniLM-L6-v2) and a `full`
model saved and loaded as `train` and `eval` do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from embedtune import io
from embedtune.embeddings import BlockStore, embed_texts, load_encoder
from embedtune.eval.__main__ import benchmark_blocks, benchmark_cache, evaluate_benchmark
from embedtune.retrieval.beir import load_benchmark
from embedtune.train.methods.base import save_tuned
from embedtune.train.methods.full import FullMethod, FullModel
from tests.helpers import cfg
from tests.helpers.eval import SPEC, identity
from tests.helpers.retrieval import BEIR_CORPUS, BEIR_QUERIES, write_beir
from tests.helpers.system import unprivileged

EMBED = cfg("embed")


@pytest.fixture(scope="module")
def full_folder(tmp_path_factory) -> Path:
    """A `full` tuned model as `train` saves it (the base weights: enough to be re-encoded)."""
    folder = tmp_path_factory.mktemp("full") / "tuned"
    encoder = load_encoder(EMBED, for_training=True)
    prefixes = (EMBED.query_prefix, EMBED.document_prefix, EMBED.batch_size)
    save_tuned(FullModel(encoder, *prefixes), folder)
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(io.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "benchmarks"


def run(bench, encoder, tuned, embed=EMBED):
    """One evaluation as `eval` runs it: (base store, tuned model, result)."""
    base, model = benchmark_blocks(encoder, embed, tuned)
    return base, model, evaluate_benchmark(bench, base, model, embed, SPEC, cfg("retrieve"))


def counts(base: BlockStore, model) -> tuple[int, ...]:
    """(base reused, base encoded, tuned reused, tuned encoded) blocks."""
    return base.reused, base.encoded, model.blocks.reused, model.blocks.encoded


def assert_same_figures(one, other) -> None:
    assert one.query_ids == other.query_ids
    assert set(one.per_query) == set(other.per_query)
    for name, values in one.per_query.items():
        for metric, per_query in values.items():
            assert np.array_equal(per_query, other.per_query[name][metric]), (name, metric)
        assert np.array_equal(one.ranked[name].best, other.ranked[name].best), name


def test_a_second_evaluation_encodes_nothing_and_scores_the_same(
    minilm, full_folder, cache, tmp_path
):
    bench = load_benchmark(write_beir(tmp_path / "tiny"))
    tuned = FullMethod().load(full_folder, EMBED)
    base, model, first = run(bench, minilm, tuned)
    assert counts(base, model) == (0, 2, 0, 2)  # queries and corpus, by each model
    assert base.folder.parent == model.blocks.folder.parent == cache
    assert base.folder != model.blocks.folder
    assert len(list(base.folder.glob("*.safetensors"))) == 2
    base, model, second = run(bench, minilm, tuned)
    assert counts(base, model) == (2, 0, 2, 0)
    assert_same_figures(first, second)
    # and the same as without any cache: float32 rows read back exactly
    plain = evaluate_benchmark(bench, BlockStore(minilm, 8), tuned, EMBED, SPEC, cfg("retrieve"))
    assert_same_figures(first, plain)
    queries = list(bench.queries.values())
    assert torch.equal(
        base.embed(queries, EMBED.query_prefix),
        embed_texts(minilm, queries, EMBED.query_prefix, EMBED.batch_size),
    )


def test_changing_one_document_encodes_only_its_block(
    minilm, full_folder, cache, tmp_path, monkeypatch
):
    monkeypatch.setattr(BlockStore, "BLOCK_TEXTS", 2)  # 2 queries: 1 block; 4 documents: 2
    tuned = FullMethod().load(full_folder, EMBED)
    base, model, _ = run(load_benchmark(write_beir(tmp_path / "tiny")), minilm, tuned)
    assert counts(base, model) == (0, 3, 0, 3)
    corpus = [dict(doc) for doc in BEIR_CORPUS]
    corpus[3]["text"] = "pass does nothing at all."  # the second block of the corpus
    bench = load_benchmark(write_beir(tmp_path / "tiny", corpus=corpus))
    base, model, _ = run(bench, minilm, tuned)
    assert counts(base, model) == (2, 1, 2, 1)


def test_another_model_or_dtype_gets_its_own_folder(minilm, cache):
    folders = {
        benchmark_blocks(minilm, embed, identity())[0].folder
        for embed in (EMBED, cfg("embed", model="another-model"), cfg("embed", dtype="float16"))
    }
    assert len(folders) == 3
    assert {f.parent for f in folders} == {cache}


def test_retrained_weights_never_read_the_old_rows(minilm, full_folder, cache, tmp_path):
    bench = load_benchmark(write_beir(tmp_path / "tiny"))
    folder = tmp_path / "models" / "tuned"
    old = FullMethod().load(full_folder, EMBED)
    save_tuned(old, folder)
    before, model, _ = run(bench, minilm, FullMethod().load(folder, EMBED))
    old_folder = model.blocks.folder
    old_rows = model.encode_corpus(list(bench.corpus.values()), None)
    # `train` again: other weights saved in the same place
    retrained = FullMethod().load(folder, EMBED)
    with torch.no_grad():
        for weight in retrained.encoder.parameters():
            weight.mul_(1.01)
    save_tuned(retrained, folder)
    _, model, _ = run(bench, minilm, FullMethod().load(folder, EMBED))
    assert model.blocks.folder != old_folder and model.blocks.folder.parent == cache
    assert (model.blocks.reused, model.blocks.encoded) == (0, 2)
    assert not torch.equal(model.encode_corpus(list(bench.corpus.values()), None), old_rows)


def test_a_damaged_block_is_encoded_again(minilm, cache, tmp_path):
    bench = load_benchmark(write_beir(tmp_path / "tiny"))
    base, _, first = run(bench, minilm, identity())
    blocks = sorted(base.folder.glob("*.safetensors"))
    blocks[0].write_bytes(blocks[0].read_bytes()[:100])  # truncated
    base, _, second = run(bench, minilm, identity())
    assert (base.reused, base.encoded) == (1, 1)
    assert_same_figures(first, second)
    base, _, _ = run(bench, minilm, identity())
    assert (base.reused, base.encoded) == (2, 0)  # written again, whole


def test_a_cache_that_cannot_be_made_still_evaluates(
    minilm, full_folder, tmp_path, monkeypatch, capsys
):
    (tmp_path / "cache").write_text("a file where the cache folder belongs")
    monkeypatch.setenv(io.CACHE_ENV, str(tmp_path / "cache"))
    bench = load_benchmark(write_beir(tmp_path / "tiny"))
    tuned = FullMethod().load(full_folder, EMBED)
    capsys.readouterr()
    base, model, result = run(bench, minilm, tuned)
    assert capsys.readouterr().err.splitlines() == [
        f"embedtune: warning: {benchmark_cache()} cannot be written (Not a directory): "
        f"benchmark embeddings are not kept (set {io.CACHE_ENV} to a writable folder to keep them)"
    ]
    assert counts(base, model) == (0, 2, 0, 2)
    plain = evaluate_benchmark(bench, BlockStore(minilm, 8), tuned, EMBED, SPEC, cfg("retrieve"))
    assert_same_figures(result, plain)
    assert (tmp_path / "cache").is_file()


def test_a_read_only_cache_serves_what_it_has(minilm, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(io.CACHE_ENV, "cache")  # relative: `unprivileged` cannot enter its parents
    bench = load_benchmark(write_beir(Path("tiny")))
    base, _, first = run(bench, minilm, identity())
    for path in Path("cache").rglob("*"):  # a shared cache others may read, not write
        path.chmod(0o555 if path.is_dir() else 0o444)
    queries = [{**BEIR_QUERIES[0], "text": "How do I go over a list?"}, *BEIR_QUERIES[1:]]
    changed = load_benchmark(write_beir(Path("changed"), queries=queries))
    kept = sorted(Path("cache").rglob("*"))
    capsys.readouterr()
    with unprivileged(tmp_path):
        base, _, second = run(bench, minilm, identity())
        changed_base, _, _ = run(changed, minilm, identity())
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "cache/benchmarks cannot be written (Permission denied)" in err[0]
    assert (base.reused, base.encoded) == (2, 0)
    assert_same_figures(first, second)
    assert (changed_base.reused, changed_base.encoded) == (1, 1)  # a new query: encoded, not kept
    assert sorted(Path("cache").rglob("*")) == kept
