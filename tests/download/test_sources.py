"""Where documents come from: a real HTTP server on 127.0.0.1, file:// URLs and local paths,
rendered pydoc PDFs, and a local folder split into train and validation by file."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from embedtune.config import Source
from embedtune.download.sources import (
    LOCAL_EXTENSIONS,
    USER_AGENT,
    download_all,
    fetch,
    local_documents,
    pydoc_pdf,
    scan_local,
    split_local,
)
from embedtune.errors import EmbedtuneError
from tests.helpers import ROOT, cfg
from tests.helpers.bad_files import BAD_FILES, HTML_ERROR_PAGE, write_bad_files
from tests.helpers.documents import PAYLOAD, PAYLOAD_SHA, RecordingHandler, make_documents, serve


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("served")


@pytest.fixture(scope="module")
def server(served):
    """Base URL of an HTTP server serving the `served` folder, which holds doc.pdf."""
    (served / "doc.pdf").write_bytes(PAYLOAD)
    with serve(served) as url:
        yield url


@pytest.fixture
def silent_server():
    """URL of a server that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/slow.pdf"


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def data_config(**updates):
    """The data section of the cpu preset with `updates`, validated like params.yaml."""
    return cfg("data", **updates)


# --- fetch -------------------------------------------------------------------------------------


def test_fetch_http_records_url_size_and_sha(server, tmp_path):
    url = f"{server}/doc.pdf"
    dest = tmp_path / "out" / "doc.pdf"
    RecordingHandler.agents.clear()
    record = fetch(Source(name="doc.pdf", url=url), dest, timeout_s=10)
    assert record == {"name": "doc.pdf", "url": url, "size": len(PAYLOAD), "sha256": PAYLOAD_SHA}
    assert dest.read_bytes() == PAYLOAD
    assert files_in(dest.parent) == ["doc.pdf"]
    assert RecordingHandler.agents == [USER_AGENT]


def test_correct_sha_pin_passes(server, tmp_path):
    dest = tmp_path / "doc.pdf"
    source = Source(name="doc.pdf", url=f"{server}/doc.pdf", sha256=PAYLOAD_SHA.upper())
    assert fetch(source, dest, timeout_s=10)["sha256"] == PAYLOAD_SHA
    assert dest.read_bytes() == PAYLOAD


def test_wrong_sha_pin_fails_and_writes_nothing(server, tmp_path):
    wrong = "0" * 64
    url = f"{server}/doc.pdf"
    dest = tmp_path / "out" / "doc.pdf"
    with pytest.raises(EmbedtuneError, match=f"sha256 is {PAYLOAD_SHA}, but .* pins {wrong}") as e:
        fetch(Source(name="doc.pdf", url=url, sha256=wrong), dest, timeout_s=10)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(url)
    assert not dest.exists()
    assert files_in(dest.parent) == []


def test_wrong_sha_pin_keeps_an_earlier_file(server, tmp_path):
    dest = tmp_path / "doc.pdf"
    dest.write_bytes(b"fetched earlier")
    with pytest.raises(EmbedtuneError, match="sha256 is"):
        fetch(Source(name="doc.pdf", url=f"{server}/doc.pdf", sha256="1" * 64), dest, 10)
    assert dest.read_bytes() == b"fetched earlier"
    assert files_in(tmp_path) == ["doc.pdf"]


# --- what came back is checked (after the pin) -------------------------------------------------


@pytest.fixture(scope="module")
def served_bad(served):
    """login.html (served as text/html), an HTML page, random bytes and nothing, as .pdf."""
    (served / "login.html").write_bytes(HTML_ERROR_PAGE)
    (served / "page.pdf").write_bytes(HTML_ERROR_PAGE)
    (served / "noise.pdf").write_bytes(BAD_FILES["random.pdf"][0])
    (served / "nothing.pdf").write_bytes(b"")
    (served / "notes.txt").write_text("Plain text is not checked for %PDF-.")
    return served


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("login.html", "the server sent an HTML page (Content-Type text/html), not the PDF"),
        ("page.pdf", "not a PDF but an HTML page"),
        ("noise.pdf", "not a PDF (it starts with"),
        ("nothing.pdf", "came back empty (0 bytes)"),
    ],
)
def test_a_pdf_source_that_is_not_a_pdf_is_refused(server, served_bad, tmp_path, path, reason):
    url = f"{server}/{path}"
    dest = tmp_path / "paper.pdf"
    dest.write_bytes(b"fetched earlier")
    with pytest.raises(EmbedtuneError) as e:
        fetch(Source(name="paper.pdf", url=url), dest, timeout_s=10)
    message = str(e.value)
    assert message.startswith(f"{url}: {reason}") and "\n" not in message
    assert dest.read_bytes() == b"fetched earlier"
    assert files_in(tmp_path) == ["paper.pdf"]


def test_the_pin_is_checked_before_the_content(server, served_bad, tmp_path):
    source = Source(name="paper.pdf", url=f"{server}/login.html", sha256="2" * 64)
    with pytest.raises(EmbedtuneError, match="sha256 is .* but data.*sha256 pins 2222"):
        fetch(source, tmp_path / "paper.pdf", timeout_s=10)


def test_other_types_are_only_checked_for_emptiness(server, served_bad, tmp_path):
    assert fetch(Source(name="notes.txt", url=f"{server}/notes.txt"), tmp_path / "n.txt", 10)
    assert fetch(Source(name="login.html", url=f"{server}/login.html"), tmp_path / "l.html", 10)
    with pytest.raises(EmbedtuneError, match="nothing.pdf: came back empty"):
        fetch(Source(name="nothing.txt", url=f"{server}/nothing.pdf"), tmp_path / "x.txt", 10)


def test_a_local_pdf_path_is_checked_too(served_bad, tmp_path):
    with pytest.raises(EmbedtuneError, match="page.pdf: not a PDF but an HTML page"):
        fetch(Source(name="page.pdf", url=str(served_bad / "page.pdf")), tmp_path / "p.pdf", 10)


def test_http_404_names_the_url(server, tmp_path):
    url = f"{server}/missing.pdf"
    dest = tmp_path / "missing.pdf"
    with pytest.raises(EmbedtuneError, match="HTTP 404") as e:
        fetch(Source(name="missing.pdf", url=url), dest, timeout_s=10)
    assert str(e.value).startswith(f"{url}: ")
    assert "\n" not in str(e.value)
    assert files_in(tmp_path) == []


def test_connection_refused_names_the_url(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/doc.pdf"
    with pytest.raises(EmbedtuneError, match="cannot fetch") as e:
        fetch(Source(name="doc.pdf", url=url), tmp_path / "doc.pdf", timeout_s=5)
    assert str(e.value).startswith(url)
    assert files_in(tmp_path) == []


def test_timeout_names_the_url(silent_server, tmp_path):
    with pytest.raises(EmbedtuneError, match="cannot fetch .*timed out") as e:
        fetch(Source(name="slow.pdf", url=silent_server), tmp_path / "slow.pdf", timeout_s=0.5)
    assert str(e.value).startswith(silent_server)
    assert "\n" not in str(e.value)
    assert files_in(tmp_path) == []


def test_file_url(served, tmp_path):
    url = (served / "doc.pdf").as_uri()
    assert url.startswith("file://")
    record = fetch(Source(name="doc.pdf", url=url), tmp_path / "doc.pdf", timeout_s=10)
    assert (record["url"], record["size"], record["sha256"]) == (url, len(PAYLOAD), PAYLOAD_SHA)
    assert (tmp_path / "doc.pdf").read_bytes() == PAYLOAD


def test_plain_local_path(served, tmp_path):
    path = str(served / "doc.pdf")
    record = fetch(Source(name="doc.pdf", url=path), tmp_path / "doc.pdf", timeout_s=10)
    assert (record["url"], record["sha256"]) == (path, PAYLOAD_SHA)
    assert (tmp_path / "doc.pdf").read_bytes() == PAYLOAD


def test_missing_local_path(tmp_path):
    path = str(tmp_path / "absent.pdf")
    with pytest.raises(EmbedtuneError, match="cannot fetch .*No such file") as e:
        fetch(Source(name="x.pdf", url=path), tmp_path / "out" / "x.pdf", timeout_s=10)
    assert str(e.value).startswith(path)
    assert files_in(tmp_path / "out") == []


def test_unsupported_scheme(tmp_path):
    with pytest.raises(EmbedtuneError, match="unsupported URL scheme 'ftp'"):
        fetch(Source(name="x.pdf", url="ftp://example.org/x.pdf"), tmp_path / "x.pdf", 10)
    assert files_in(tmp_path) == []


# --- pydoc topics rendered into a PDF ----------------------------------------------------------


def test_pydoc_fetch_records_topics(tmp_path):
    source = Source(name="loops.pdf", pydoc_topics=["for", "while"])
    record = fetch(source, tmp_path / "loops.pdf", timeout_s=10)
    data = (tmp_path / "loops.pdf").read_bytes()
    assert record == {
        "name": "loops.pdf",
        "url": "pydoc:for,while",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def test_pydoc_sha_pin_is_checked(tmp_path):
    data = pydoc_pdf("loops.pdf", ["for"])
    pinned = Source(name="loops.pdf", pydoc_topics=["for"], sha256=hashlib.sha256(data).hexdigest())
    assert fetch(pinned, tmp_path / "loops.pdf", timeout_s=10)["size"] == len(data)
    wrong = Source(name="other.pdf", pydoc_topics=["for"], sha256="f" * 64)
    with pytest.raises(EmbedtuneError, match=r"^other\.pdf: sha256 is .* pins f{64}"):
        fetch(wrong, tmp_path / "other.pdf", timeout_s=10)
    assert files_in(tmp_path) == ["loops.pdf"]


def test_pydoc_pdf_is_byte_identical_across_calls():
    first = pydoc_pdf("loops.pdf", ["for", "while"])
    assert first.startswith(b"%PDF-")
    assert pydoc_pdf("loops.pdf", ["for", "while"]) == first
    assert pydoc_pdf("loops.pdf", ["while", "for"]) != first


def test_pydoc_pdf_is_byte_identical_across_processes():
    script = (
        "import hashlib; from embedtune.download.sources import pydoc_pdf; "
        "print(hashlib.sha256(pydoc_pdf('loops.pdf', ['for', 'while'])).hexdigest())"
    )
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": ""}
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        ).stdout.strip()
        for _ in range(2)
    }
    expected = hashlib.sha256(pydoc_pdf("loops.pdf", ["for", "while"])).hexdigest()
    assert digests == {expected}


def test_unknown_pydoc_topic(tmp_path):
    source = Source(name="bad.pdf", pydoc_topics=["for", "no-such-topic"])
    with pytest.raises(EmbedtuneError, match="'bad.pdf': unknown pydoc topic 'no-such-topic'"):
        fetch(source, tmp_path / "bad.pdf", timeout_s=10)
    assert files_in(tmp_path) == []


# --- download_all: both splits, atomically -----------------------------------------------------


def test_download_all_writes_both_splits(server, tmp_path):
    data = data_config(
        train=[Source(name="doc.pdf", url=f"{server}/doc.pdf")],
        validation=[Source(name="assert.pdf", pydoc_topics=["assert"])],
    )
    raw = tmp_path / "raw"
    manifest = download_all(data, raw)
    assert list(manifest) == ["train", "validation"]
    assert [r["name"] for r in manifest["train"]] == ["doc.pdf"]
    assert manifest["validation"][0]["url"] == "pydoc:assert"
    assert (raw / "train" / "doc.pdf").read_bytes() == PAYLOAD
    assert (raw / "validation" / "assert.pdf").read_bytes()[:5] == b"%PDF-"
    assert files_in(tmp_path) == ["raw"]


def test_download_all_replaces_what_was_there(server, tmp_path):
    raw = tmp_path / "raw"
    (raw / "train").mkdir(parents=True)
    (raw / "train" / "old.pdf").write_bytes(b"from an earlier data preset")
    data = data_config(
        train=[Source(name="doc.pdf", url=f"{server}/doc.pdf")],
        validation=[Source(name="assert.pdf", pydoc_topics=["assert"])],
    )
    download_all(data, raw)
    assert files_in(raw / "train") == ["doc.pdf"]


def test_download_all_failure_keeps_existing_raw(server, tmp_path):
    raw = tmp_path / "raw"
    (raw / "train").mkdir(parents=True)
    (raw / "train" / "old.pdf").write_bytes(b"produced earlier")
    data = data_config(
        train=[Source(name="doc.pdf", url=f"{server}/doc.pdf")],
        validation=[Source(name="gone.pdf", url=f"{server}/gone.pdf")],
    )
    with pytest.raises(EmbedtuneError, match="gone.pdf: HTTP 404"):
        download_all(data, raw)
    assert files_in(tmp_path) == ["raw"]  # no staging folder left behind
    assert files_in(raw) == ["train"]
    assert files_in(raw / "train") == ["old.pdf"]
    assert (raw / "train" / "old.pdf").read_bytes() == b"produced earlier"


# --- data.local_dir: a folder of documents split by file ---------------------------------------


@pytest.fixture
def documents(tmp_path) -> Path:
    return make_documents(tmp_path / "docs")


ALL_DOCS = ["guide/dicts.md", "loops.pdf", "notes.txt", "sets.html", "strings.docx"]


def test_local_documents_sorted_supported_and_visible(documents):
    assert local_documents(documents) == ALL_DOCS
    assert {Path(n).suffix for n in ALL_DOCS} == set(LOCAL_EXTENSIONS)


def test_local_documents_extension_case_is_ignored(tmp_path):
    (tmp_path / "A.PDF").write_bytes(b"%PDF-")
    (tmp_path / "b.Txt").write_text("text")
    assert local_documents(tmp_path) == ["A.PDF", "b.Txt"]


def test_local_documents_missing_folder(tmp_path):
    with pytest.raises(EmbedtuneError, match=r"data\.local_dir: .*nowhere is not a folder") as e:
        local_documents(tmp_path / "nowhere")
    assert "\n" not in str(e.value)


def test_local_documents_without_documents(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "photo.jpg").write_bytes(b"jpeg")
    with pytest.raises(EmbedtuneError, match=r"data\.local_dir: .*empty holds no \.pdf, \.txt"):
        local_documents(tmp_path / "empty")


@pytest.mark.parametrize(
    ("n", "fraction", "validating"), [(2, 0.2, 1), (10, 0.2, 2), (3, 0.9, 2), (4, 0.01, 1)]
)
def test_split_local_sizes(n, fraction, validating):
    names = [f"doc{i:02d}.pdf" for i in range(n)]
    split = split_local(names, fraction)
    assert len(split["validation"]) == validating
    assert sorted(split["train"] + split["validation"]) == names
    assert split["train"] == sorted(split["train"])
    assert split["validation"] == sorted(split["validation"])


def test_split_local_validates_the_smallest_hashes():
    names = [f"report-{i}.pdf" for i in range(10)]
    by_hash = sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    assert split_local(names, 0.3)["validation"] == sorted(by_hash[:3])


def test_split_local_depends_on_names_only():
    names = [f"report-{i}.pdf" for i in range(20)]
    split = split_local(names, 0.25)
    assert split_local(list(reversed(names)), 0.25) == split
    # One more document moves at most one other across.
    grown = split_local([*names, "report-new.pdf"], 0.25)
    moved = set(split["validation"]) ^ (set(grown["validation"]) - {"report-new.pdf"})
    assert len(moved) <= 1


def test_split_local_needs_two_documents():
    with pytest.raises(EmbedtuneError, match="at least 2 documents .* found 1: only.pdf"):
        split_local(["only.pdf"], 0.2)


def test_download_all_from_local_dir(documents, tmp_path):
    raw = tmp_path / "raw"
    data = data_config(train=[], validation=[], local_dir=str(documents), validation_fraction=0.4)
    manifest = download_all(data, raw)
    split = split_local(ALL_DOCS, 0.4)
    for name in ("train", "validation"):
        assert [r["name"] for r in manifest[name]] == split[name]
        for record in manifest[name]:
            source = documents / record["name"]
            assert (raw / name / record["name"]).read_bytes() == source.read_bytes()
            assert record["url"] == str(source)
            assert record["size"] == source.stat().st_size
            assert record["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert files_in(tmp_path) == ["docs", "raw"]


def test_local_dir_relative_to_the_working_directory(documents, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = data_config(train=[], validation=[], local_dir="docs")
    manifest = download_all(data, tmp_path / "raw")
    names = sorted(r["name"] for split in manifest.values() for r in split)
    assert names == ALL_DOCS


def test_download_all_from_missing_local_dir_keeps_raw(tmp_path):
    raw = tmp_path / "raw"
    (raw / "train").mkdir(parents=True)
    data = data_config(train=[], validation=[], local_dir=str(tmp_path / "gone"))
    with pytest.raises(EmbedtuneError, match="gone is not a folder"):
        download_all(data, raw)
    assert files_in(raw) == ["train"]


# --- data.local_dir: files that cannot be read never validate ----------------------------------


def test_an_unreadable_file_never_validates_and_trains_instead(tmp_path):
    docs = tmp_path / "docs"
    names = [f"report-{i}.txt" for i in range(10)]
    for name in names:
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text(f"The text of {name}.")
    plain = split_local(names, 0.2)
    for name in plain["validation"]:  # the two the names alone would validate become bad
        (docs / name).write_bytes(b"")
    manifest = download_all(
        data_config(train=[], validation=[], local_dir=str(docs)), tmp_path / "raw"
    )
    validation = [r["name"] for r in manifest["validation"]]
    assert len(validation) == 2 and not set(validation) & set(plain["validation"])
    assert set(plain["validation"]) <= {r["name"] for r in manifest["train"]}


def test_too_few_readable_files_say_which_and_why(tmp_path):
    docs = tmp_path / "docs"
    write_bad_files(docs, ["empty.pdf", "locked.pdf"])
    (docs / "good.txt").write_text("The only readable document.")
    raw = tmp_path / "raw"
    with pytest.raises(EmbedtuneError) as e:
        download_all(data_config(train=[], validation=[], local_dir=str(docs)), raw)
    message = str(e.value)
    assert message.startswith("data.local_dir needs at least 2 readable documents")
    assert "found 1 of 3" in message and "\n" not in message
    assert f"{docs}/empty.pdf: empty (0 bytes)" in message
    assert f"{docs}/locked.pdf: encrypted PDF" in message
    assert not raw.exists()


def test_symlinks_to_outside_the_folder_are_not_followed(tmp_path, capsys):
    docs, outside = tmp_path / "docs", tmp_path / "outside"
    for folder in (docs / "sub", outside):
        folder.mkdir(parents=True)
    (outside / "secret.txt").write_text("never copied")
    (docs / "a.txt").write_text("A readable document.")
    (docs / "sub" / "b.txt").write_text("Another readable document.")
    (docs / "leak.txt").symlink_to(outside / "secret.txt")
    (docs / "alias.txt").symlink_to(docs / "a.txt")  # inside: followed
    (docs / "linked").symlink_to(outside, target_is_directory=True)  # folders: never
    names, ignored = scan_local(docs)
    assert names == ["a.txt", "alias.txt", "sub/b.txt"]
    assert ignored == [f"{docs}/leak.txt: a symlink to outside {docs}, not followed"]
    download_all(data_config(train=[], validation=[], local_dir=str(docs)), tmp_path / "raw")
    assert "never copied" not in "".join(p.read_text() for p in (tmp_path / "raw").rglob("*.txt"))
    assert f"ignored    {docs}/leak.txt" in capsys.readouterr().out


def test_files_of_other_types_are_listed_as_ignored(documents):
    names, ignored = scan_local(documents)
    assert names == ALL_DOCS
    assert ignored == [
        f"{documents}/image.png: unsupported type, not one of {', '.join(LOCAL_EXTENSIONS)}"
    ]


def test_a_listed_source_that_cannot_be_fetched_is_named_by_its_key(server, tmp_path):
    data = data_config(
        train=[Source(name="doc.pdf", url=f"{server}/doc.pdf")],
        validation=[Source(name="gone.pdf", url=f"{server}/gone.pdf")],
    )
    with pytest.raises(EmbedtuneError) as info:
        download_all(data, tmp_path / "raw")
    assert str(info.value).endswith("HTTP 404 File not found [data.validation[0] in params.yaml]")


def test_an_arxiv_paper_offline_names_the_default_recipe_and_the_fix(tmp_path):
    # a host under arxiv.org that does not exist: no answer here or online, and no download
    url = "https://no-such-host.arxiv.org/pdf/2402.04177"
    data = data_config(
        train=[Source(name="2402.04177.pdf", url=url)],
        validation=[Source(name="assert.pdf", pydoc_topics=["assert"])],
    )
    with pytest.raises(EmbedtuneError) as info:
        download_all(data, tmp_path / "raw")
    assert str(info.value).startswith(f"{url}: cannot fetch (")
    assert str(info.value).endswith(
        " [data.train[0] in params.yaml, from data=arxiv, the default recipe's: offline, "
        "pass -S experiment=cpu]"
    )
