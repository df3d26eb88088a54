"""Documents that cannot be read: one line naming the file, the reason and the fix, from the
reader up to the chunk stage and the real dvc CLI; hostile files stay bounded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import embedtune.chunk.__main__ as chunk
from embedtune.reading.bad_documents import BadDocument
from embedtune.reading.readers import Limits, read_document
from embedtune.stage import run_stage
from tests.helpers import ROOT, cfg, cli_env, copy_project, run_cli
from tests.helpers.bad_files import (
    BAD_FILES,
    bomb_pdf,
    deep_html,
    encrypted_pdf,
    good_pdf,
    many_pages_pdf,
    sparse_text,
    write_bad_files,
)

# --- the reader --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_each_bad_file_is_one_line_naming_it_with_reason_and_fix(tmp_path, name):
    data, kind, words = BAD_FILES[name]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(BadDocument) as raised:
        read_document(tmp_path / name, f"docs/{name}")
    problem = raised.value
    assert problem.kind == kind
    assert str(problem).startswith(f"docs/{name}: ") and words in problem.reason
    assert problem.fix and problem.fix in str(problem)
    assert "\n" not in str(problem)


def test_a_good_pdf_and_one_encrypted_without_a_user_password_are_read(tmp_path):
    (tmp_path / "good.pdf").write_bytes(good_pdf())
    (tmp_path / "restricted.pdf").write_bytes(encrypted_pdf(user_password=""))
    pages = read_document(tmp_path / "good.pdf", "good.pdf")
    assert pages[0].metadata == {"page_label": "1", "file_name": "good.pdf"}
    assert [d.text for d in read_document(tmp_path / "restricted.pdf", "r.pdf")] == [
        d.text for d in pages
    ]


def test_limits_are_the_chunk_parameters(tmp_path):
    (tmp_path / "ten.pdf").write_bytes(many_pages_pdf(10))
    with pytest.raises(BadDocument, match=r"10 pages, more than chunk\.max_pages \(9\)"):
        read_document(tmp_path / "ten.pdf", "ten.pdf", Limits(max_pages=9))
    (tmp_path / "good.pdf").write_bytes(good_pdf())
    with pytest.raises(BadDocument, match=r"more than chunk\.max_text_mb \(0\.001\) MB of text"):
        read_document(tmp_path / "good.pdf", "good.pdf", Limits(max_text_mb=0.001))
    with pytest.raises(BadDocument, match=r"MB, more than chunk\.max_file_mb \(0\.001\)"):
        read_document(tmp_path / "good.pdf", "good.pdf", Limits(max_file_mb=0.001))
    (tmp_path / "page.html").write_text("<div>" * 5 + "text" + "</div>" * 5)
    assert read_document(tmp_path / "page.html", "page.html", Limits(max_html_depth=5))
    with pytest.raises(BadDocument, match=r"more than chunk\.max_html_depth \(4\)"):
        read_document(tmp_path / "page.html", "page.html", Limits(max_html_depth=4))
    assert Limits.of(cfg("chunk")) == Limits()  # the defaults are conf/chunk's


def test_unclosed_paragraphs_and_void_tags_are_not_depth(tmp_path):
    page = "<html><body>" + "<p>one<br><img src=x><li>item" * 2000 + "</body></html>"
    (tmp_path / "flat.html").write_text(page)
    (document,) = read_document(tmp_path / "flat.html", "flat.html", Limits(max_html_depth=8))
    assert document.text.count("item") == 2000


HOSTILE = """
import sys
from pathlib import Path
from embedtune.reading.bad_documents import BadDocument
from embedtune.reading.readers import read_document
for path in sorted(Path(sys.argv[1]).iterdir()):
    try:
        read_document(path, path.name)
        print(path.name, "read")
    except BadDocument as problem:
        print(path.name, problem.kind)
# VmHWM: this process's peak resident memory (ru_maxrss would count the forking parent's)
peak = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]
print("peak MB", int(peak) // 1024)
"""


def test_hostile_files_stop_with_a_named_error_in_bounded_memory(tmp_path):
    """A 200 MB-inflating stream, 6,000 pages, a 200 MB text file, 100,000 nested elements:
    each stops with its reason, and the whole process stays within 600 MB (the imports of
    LlamaIndex and pypdf are about 350 MB of it)."""
    (tmp_path / "bomb.pdf").write_bytes(bomb_pdf(inflated_mb=200))
    (tmp_path / "pages.pdf").write_bytes(many_pages_pdf(6000))
    sparse_text(tmp_path / "huge.txt", megabytes=200)
    (tmp_path / "deep.html").write_text(deep_html(100_000))
    proc = subprocess.run(
        [sys.executable, "-c", HOSTILE, str(tmp_path)],
        env=cli_env(ROOT / "src"),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = proc.stdout.splitlines()
    assert lines[:-1] == [
        "bomb.pdf decompression_bomb",
        "deep.html too_deep",
        "huge.txt too_large",
        "pages.pdf too_many_pages",
    ]
    assert int(lines[-1].split()[-1]) < 600


# --- the chunk stage ---------------------------------------------------------------------------

EVERY_TYPE = [".pdf", ".txt", ".md", ".html", ".docx"]


def chunk_stage_dir(folder: Path, policy: str, bad: list[str]) -> Path:
    for split, name in (("train", "loops.pdf"), ("validation", "whiles.pdf")):
        (folder / "data/raw" / split).mkdir(parents=True)
        (folder / "data/raw" / split / name).write_bytes(good_pdf())
    write_bad_files(folder / "data/raw/train", bad)
    section = cfg("chunk", on_bad_document=policy, extensions=EVERY_TYPE).model_dump()
    (folder / "params.yaml").write_text(yaml.safe_dump({"chunk": section}))
    return folder


def test_chunk_fail_names_the_first_bad_file_and_writes_nothing(tmp_path, monkeypatch, capsys):
    chunk_stage_dir(tmp_path, "fail", ["empty.pdf", "locked.pdf"])
    (tmp_path / "data/chunks").mkdir()
    (tmp_path / "data/chunks/train.jsonl").write_text("earlier\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run_stage("chunk", chunk.main)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "embedtune chunk: error: data/raw/train/empty.pdf: empty (0 bytes); replace it with the "
        "real document (1 more bad files); or set chunk.on_bad_document=skip to leave them out\n"
    )
    assert (tmp_path / "data/chunks/train.jsonl").read_text() == "earlier\n"
    assert not (tmp_path / "metrics").exists()


def test_chunk_skip_lists_and_counts_every_bad_file(tmp_path, monkeypatch, capsys):
    chunk_stage_dir(tmp_path, "skip", sorted(BAD_FILES))
    monkeypatch.chdir(tmp_path)
    chunk.main()
    skipped = json.loads((tmp_path / "data/chunks/skipped.json").read_text())
    assert [s["file"] for s in skipped] == [f"data/raw/train/{n}" for n in sorted(BAD_FILES)]
    assert [s["kind"] for s in skipped] == [BAD_FILES[n][1] for n in sorted(BAD_FILES)]
    metrics = json.loads((tmp_path / "metrics/chunk.json").read_text())
    assert metrics["skipped"] == len(BAD_FILES)
    assert metrics["reasons"] == {BAD_FILES[n][1]: 1 for n in BAD_FILES}
    assert metrics["train"]["chunks"] > 0 and metrics["validation"]["chunks"] > 0
    out = capsys.readouterr().out
    assert out.count("skipped    data/raw/train/") == len(BAD_FILES)
    train = [json.loads(line) for line in (tmp_path / "data/chunks/train.jsonl").open()]
    assert {r["file_name"] for r in train} == {"loops.pdf"}


def test_chunk_skip_that_empties_a_split_says_which_files_and_why(tmp_path, monkeypatch, capsys):
    chunk_stage_dir(tmp_path, "skip", [])
    (tmp_path / "data/raw/validation/whiles.pdf").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        run_stage("chunk", chunk.main)
    err = capsys.readouterr().err
    assert err == (
        "embedtune chunk: error: data/raw/validation: no readable document left "
        "(data/raw/validation/whiles.pdf: empty (0 bytes)); add readable documents to this split\n"
    )
    assert not (tmp_path / "data/chunks").exists()


# --- data=local through the real dvc CLI -------------------------------------------------------

GOOD_DOCS = {
    "loops.txt": "A for loop runs its body once for every item of a sequence. " * 20,
    "sets.txt": "A set holds unique items and supports union and intersection. " * 20,
    "dicts.md": "# Dicts\n\nA dict maps keys to values; keys must be hashable. " * 20,
}
DVC_BAD = ["empty.pdf", "error-page.pdf", "locked.pdf", "random.pdf", "scan.pdf", "latin1.txt"]


@pytest.fixture(scope="module")
def docs_repo(tmp_path_factory) -> Path:
    """The project with good and bad documents in documents/, and a symlink to a file outside."""
    work = tmp_path_factory.mktemp("bad-docs")
    repo = copy_project(work / "repo")
    for name, text in GOOD_DOCS.items():
        (repo / "documents" / name).write_text(text)
    write_bad_files(repo / "documents", DVC_BAD)
    (work / "secret.txt").write_text("outside the documents folder: never read")
    (repo / "documents/link.txt").symlink_to(work / "secret.txt")
    return repo


def exp_run_chunk(repo: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = ["dvc", "exp", "run", "chunk", "-S", "experiment=cpu", "-S", "data=local"]
    return run_cli([*args, *(a for o in overrides for a in ("-S", o))], repo, check=False)


@pytest.mark.slow
def test_dvc_fail_then_skip_on_a_folder_of_bad_documents(docs_repo):
    failed = exp_run_chunk(docs_repo)
    assert failed.returncode != 0
    (error,) = [line for line in failed.stderr.splitlines() if "embedtune chunk" in line]
    assert error.startswith("embedtune chunk: error: data/raw/train/empty.pdf: empty (0 bytes)")
    assert "(5 more bad files); or set chunk.on_bad_document=skip" in error
    assert "Traceback" not in failed.stderr
    # download's output is still there; the bad files train, readable ones validate
    validation = sorted(p.name for p in (docs_repo / "data/raw/validation").iterdir())
    assert validation and set(validation) <= set(GOOD_DOCS)
    assert not (docs_repo / "data/raw/train/link.txt").exists()
    assert "a symlink to outside documents, not followed" in failed.stdout

    skipped = exp_run_chunk(docs_repo, "chunk.on_bad_document=skip")
    assert skipped.returncode == 0, skipped.stderr
    listed = json.loads((docs_repo / "data/chunks/skipped.json").read_text())
    assert sorted(Path(s["file"]).name for s in listed) == sorted(DVC_BAD)
    shown = json.loads(run_cli(["dvc", "metrics", "show", "--json"], docs_repo).stdout)
    metrics = next(iter(shown.values()))["data"]["metrics/chunk.json"]["data"]
    assert metrics["skipped"] == len(DVC_BAD)
    assert metrics["reasons"]["no_text_layer"] == 1
    texts = " ".join(
        json.loads(line)["text"]
        for p in (docs_repo / "data/chunks").glob("*.jsonl")
        for line in p.open()
    )
    assert "never read" not in texts and "unique items" in texts

    # a failing run after it loses nothing: DVC's cache gives the skip run's outputs back
    assert exp_run_chunk(docs_repo).returncode != 0
    run_cli(["dvc", "checkout", "data/chunks"], docs_repo)
    assert json.loads((docs_repo / "data/chunks/skipped.json").read_text()) == listed
