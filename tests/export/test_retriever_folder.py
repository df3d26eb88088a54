"""The retriever folder rebuilt in LlamaIndex (docs/using-the-model.md's recipe, run as written)
ranks as embedtune does: the same top 5 for dense, BM25 and convex fusion; for RRF, LlamaIndex's
own rule (k 60 on ranks from 0, consecutive ranks for ties, each part's list only), checked.

The corpus: 45 Python reference topics in two splits; the tuned model a `full` model exported
with the base weights (the folder's plumbing is what is tested, not the tuning)."""

from __future__ import annotations

import json
import pydoc_data.topics
import re
import shutil
from pathlib import Path

import pytest
import torch

from embedtune.embeddings import embed_dataset, embed_texts
from embedtune.errors import EmbedtuneError
from embedtune.export.model import Sources, exported, normalised, save_exported
from embedtune.export.retriever import FOLDER, SplitChunks, build, load_folder, save_folder
from embedtune.retrieval.retrievers import RetrievalInputs, candidates
from embedtune.train.methods.full import FullModel
from tests.helpers import ROOT, cfg
from tests.helpers.export import FIELDS
from tests.helpers.methods import embed_cfg

pytest.importorskip(
    "llama_index.retrievers.bm25",
    reason="llama-index-retrievers-bm25 not installed (make setup installs it with --no-deps)",
)

EMBED = embed_cfg()  # prefixes "query: " and "passage: "
RETRIEVE = cfg("retrieve")  # bm25 english, stemming, stop words; rrf k 60; convex 0.3, 0.5, 0.7
DOC = ROOT / "docs" / "using-the-model.md"
SHIPPED = ["base", "tuned", "bm25", "tuned+bm25:convex50", "base+bm25:convex30", "base+bm25:rrf60"]
TOPICS = sorted(pydoc_data.topics.topics)
SAMPLE = 12  # questions asked of each retriever


def topic_split(name: str, topics: list[str], offset: int) -> SplitChunks:
    """One split: a chunk per topic (its first 60 words), a question per topic."""
    text = pydoc_data.topics.topics
    ids = [f"{name[0]}{offset + i}" for i in range(len(topics))]
    dataset = {
        "queries": {
            f"q{cid}": f"How is {t.replace('-', ' ')} used?"
            for cid, t in zip(ids, topics, strict=True)
        },
        "corpus": {cid: " ".join(text[t].split()[:60]) for cid, t in zip(ids, topics, strict=True)},
        "relevant_docs": {f"q{cid}": [cid] for cid in ids},
    }
    records = {cid: {"file_name": f"{name}.pdf", "page": str(i + 1)} for i, cid in enumerate(ids)}
    return SplitChunks(name, dataset, None, records)


@pytest.fixture(scope="module")
def splits(minilm) -> list[SplitChunks]:
    made = [topic_split("train", TOPICS[:30], 0), topic_split("validation", TOPICS[30:45], 30)]
    return [
        SplitChunks(s.name, s.dataset, embed_dataset(minilm, s.dataset, EMBED), s.records)
        for s in made
    ]


@pytest.fixture(scope="module")
def tuned(minilm):
    return FullModel(minilm, EMBED.query_prefix, EMBED.document_prefix, EMBED.batch_size)


@pytest.fixture(scope="module")
def export_root(tuned, minilm, tmp_path_factory) -> Path:
    """<root>/models/export/model: the tuned model exported as the stage exports it."""
    root = tmp_path_factory.mktemp("export")
    prompts = {"query": EMBED.query_prefix, "document": EMBED.document_prefix}
    result = exported(tuned, Sources(base=lambda: minilm, train=dict))
    save_exported(result, root / "models" / "export" / "model", prompts, FIELDS, "")
    return root


def shipped_description(name: str) -> dict:
    """models/retriever/retriever.json as `retrieve` writes it for the candidate `name`."""
    candidate = {c.name: c for c in candidates(RETRIEVE)}[name]
    return {
        **candidate.describe(),
        "bm25": RETRIEVE.bm25.model_dump() if candidate.lexical else None,
    }


def write_folder(name: str, root: Path, splits, tuned, minilm) -> Path:
    folder = root / FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    prompts = {"query": EMBED.query_prefix, "document": EMBED.document_prefix}
    base = normalised(list(minilm))
    served = build(shipped_description(name), splits, RETRIEVE.bm25, prompts, "full", tuned, base)
    save_folder(served, folder)
    return folder


def recipe(section: str) -> list[str]:
    """The Python blocks of one section of docs/using-the-model.md."""
    text = DOC.read_text()
    part = text.split(section, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", part, flags=re.DOTALL)


def llamaindex_retriever(root: Path, monkeypatch) -> dict:
    """The docs' LlamaIndex recipe, run as written from `root`."""
    (block,) = recipe("### Serving it with LlamaIndex")
    monkeypatch.chdir(root)
    namespace: dict = {}
    exec(compile(block, str(DOC), "exec"), namespace)
    return namespace


def sample_questions(splits) -> list[str]:
    questions = [q for s in splits for q in s.dataset["queries"].values()]
    return questions[:: len(questions) // SAMPLE][:SAMPLE]


def embedtune_scores(name: str, folder: Path, questions: list[str], minilm, tuned) -> torch.Tensor:
    """(questions, chunks) scores of candidate `name` by the code `eval` ranks with, over the
    folder's chunks (from the splits' texts, not from the folder's vectors)."""
    texts = [c["text"] for c in load_folder(folder).chunks]
    base_q = embed_texts(minilm, questions, EMBED.query_prefix, EMBED.batch_size)
    base_c = embed_texts(minilm, texts, EMBED.document_prefix, EMBED.batch_size)
    dense = {
        "base": (base_q, base_c),
        "tuned": (tuned.encode_queries(questions, base_q), tuned.encode_corpus(texts, base_c)),
    }
    candidate = {c.name: c for c in candidates(RETRIEVE)}[name]
    inputs = RetrievalInputs.build(dense, questions, texts, RETRIEVE.bm25)
    return inputs.scorer(candidate)(0, len(questions))


def top_ids(scores: torch.Tensor, ids: list[str], k: int = 5) -> list[str]:
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    return [ids[i] for i in order]


@pytest.mark.parametrize("name", SHIPPED)
def test_llamaindex_rebuilt_from_the_folder_ranks_as_embedtune(
    name, splits, tuned, minilm, export_root, monkeypatch
):
    folder = write_folder(name, export_root, splits, tuned, minilm)
    served = load_folder(folder, method="full")
    ids = [c["id"] for c in served.chunks]
    questions = sample_questions(splits)
    expected = embedtune_scores(name, folder, questions, minilm, tuned)
    ran = llamaindex_retriever(export_root, monkeypatch)
    retriever, parts = ran["retriever"], ran["parts"]
    same_top = 0  # RRF: questions whose top chunk is embedtune's
    for row, question in enumerate(questions):
        found = retriever.retrieve(question)
        got = [n.node.node_id for n in found]
        assert len(got) == 5
        scores = expected[row]
        if "rrf" not in name:
            # the same chunks in the same order, up to chunks tied in embedtune's score
            want = [float(scores[ids.index(i)]) for i in top_ids(scores, ids)]
            have = [float(scores[ids.index(i)]) for i in got]
            assert have == pytest.approx(want, rel=1e-5, abs=1e-6), question
            if name == "bm25":  # LlamaIndex's own BM25 scores are embedtune's
                assert [n.score for n in found] == pytest.approx(want, rel=1e-5, abs=1e-6)
        else:
            lists = [p.retrieve(question) for p in parts]
            assert [len(x) for x in lists] == [len(ids)] * 2  # each part ranks every chunk
            fused: dict[str, float] = {}
            for ranked in lists:  # LlamaIndex's rule: k 60, ranks from 0, in list order
                for rank, n in enumerate(sorted(ranked, key=lambda n: n.score, reverse=True)):
                    fused[n.node.node_id] = fused.get(n.node.node_id, 0.0) + 1 / (60 + rank)
            rule = sorted(fused, key=fused.get, reverse=True)[:5]
            assert got == rule, question
            same_top += got[0] == top_ids(scores, ids, 1)[0]
    if "rrf" in name:  # 11 of 12 when written (docs/using-the-model.md): mostly, not always
        assert same_top >= len(questions) - 2


def test_the_folder_holds_the_chunks_sources_and_vectors_eval_scores(
    splits, tuned, minilm, export_root, monkeypatch, capsys
):
    folder = write_folder("tuned+bm25:convex50", export_root, splits, tuned, minilm)
    (block,) = recipe("## The shipped retriever, ready to serve")
    monkeypatch.chdir(export_root)
    exec(compile(block, str(DOC), "exec"), {})  # the docs' load_folder line, as written
    assert capsys.readouterr().out == "tuned+bm25:convex50 45 train.pdf\n"
    settings = json.loads((folder / "retriever.json").read_text())
    assert settings["model"] == "../model" and (folder / settings["model"]).is_dir()
    assert settings["fusion"] == {"kind": "convex", "dense_weight": 0.5}
    assert settings["bm25"]["index"] == "bm25" and settings["count"] == 45
    assert not list(folder.rglob("*.pkl")) and not list(folder.rglob("*.pickle"))
    served = load_folder(folder)
    first = served.chunks[0]
    assert first == {
        "id": "t0",
        "text": splits[0].dataset["corpus"]["t0"],
        "file_name": "train.pdf",
        "page": "1",
        "split": "train",
    }
    assert served.chunks[30]["split"] == "validation"
    texts = [c["text"] for c in served.chunks]
    expected = embed_texts(minilm, texts, EMBED.document_prefix, EMBED.batch_size)
    assert torch.allclose(served.embeddings, expected, atol=1e-5)


def test_a_base_model_retriever_carries_the_base_model(splits, tuned, minilm, export_root):
    from sentence_transformers import SentenceTransformer

    folder = write_folder("base+bm25:rrf60", export_root, splits, tuned, minilm)
    settings = json.loads((folder / "retriever.json").read_text())
    assert settings["model"] == "model" and settings["fusion"] == {"kind": "rrf", "k": 60}
    model = SentenceTransformer(str(folder / "model"), device="cpu")
    query = embed_texts(minilm, ["How do generators work?"], EMBED.query_prefix, 8)
    assert torch.allclose(
        model.encode_query(["How do generators work?"], convert_to_tensor=True), query[0], atol=1e-5
    )


def test_a_missing_index_or_another_methods_folder_says_what_to_run(
    splits, tuned, minilm, export_root
):
    folder = write_folder("base+bm25:rrf60", export_root, splits, tuned, minilm)
    with pytest.raises(
        EmbedtuneError,
        match=r"retriever was exported for train\.method=full, params\.yaml's train\.method is "
        r"nudge: run `dvc repro export`$",
    ):
        load_folder(folder, method="nudge")
    shutil.rmtree(folder / "bm25")
    with pytest.raises(
        EmbedtuneError,
        match=r"models/export/retriever/bm25 not found: run `dvc repro export` first$",
    ):
        load_folder(folder)
    shutil.rmtree(folder)
    with pytest.raises(
        EmbedtuneError, match=r"retriever\.json not found: run `dvc repro export` first$"
    ):
        load_folder(folder)


def test_the_docs_loading_block_is_the_cards_which_test_export_runs():
    from embedtune.export.usage import loading

    (block, *_) = recipe("## Loading it")
    assert f"```python\n{block}```" in loading("full", EMBED.model_dump(), False, 0)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            {"fusion": {"kind": "nope"}},
            "fusion.kind 'nope' is not a fusion embedtune serves (known: convex, rrf)",
        ),
        ({"fusion": {"kind": "rrf", "k": 0}}, "fusion.k: input should be greater than 0, got 0"),
        ({"fusion": {"kind": "rrf"}}, "missing key fusion.k"),
        ({"bm25": {"language": "english"}}, "missing key bm25.stemming"),
        ({"dense": "gist"}, "dense: input should be 'base' or 'tuned', got 'gist'"),
        ({"colour": "blue"}, "unknown key colour"),
    ],
)
def test_settings_embedtune_would_not_serve_are_one_line_naming_the_key(
    change, problem, splits, tuned, minilm, export_root, monkeypatch
):
    folder = write_folder("base+bm25:rrf60", export_root, splits, tuned, minilm)
    settings = json.loads((folder / "retriever.json").read_text())
    (folder / "retriever.json").write_text(json.dumps({**settings, **change}))
    with pytest.raises(EmbedtuneError) as info:
        load_folder(folder)
    assert str(info.value) == (
        f"{folder / 'retriever.json'}: {problem}; rebuild it with `dvc repro export`"
    )


def test_the_docs_recipe_refuses_a_fusion_it_cannot_serve(
    splits, tuned, minilm, export_root, monkeypatch
):
    folder = write_folder("base+bm25:convex50", export_root, splits, tuned, minilm)
    settings = json.loads((folder / "retriever.json").read_text())
    settings["fusion"] = {"kind": "max"}
    (folder / "retriever.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="serves rrf and convex fusions, not 'max'"):
        llamaindex_retriever(export_root, monkeypatch)
