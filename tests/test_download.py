"""The download stage against a real local HTTP server, local files and rendered pydoc PDFs."""

from __future__ import annotations

import functools
import hashlib
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from embedtune.config import DataConfig, Source
from embedtune.download import download_all, fetch, pydoc_pdf
from embedtune.errors import EmbedtuneError

PAYLOAD = b"%PDF-1.4 not really a pdf, but bytes are bytes\n" * 100
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("served")


@pytest.fixture(scope="module")
def server(served):
    """Base URL of an HTTP server on 127.0.0.1 serving the `served` folder."""
    (served / "doc.pdf").write_bytes(PAYLOAD)
    handler = functools.partial(QuietHandler, directory=str(served))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fetch_http_records_url_size_and_sha(server, tmp_path):
    url = f"{server}/doc.pdf"
    dest = tmp_path / "out" / "doc.pdf"
    record = fetch(Source(name="doc.pdf", url=url), dest, timeout_s=10)
    assert record == {"name": "doc.pdf", "url": url, "size": len(PAYLOAD), "sha256": PAYLOAD_SHA}
    assert dest.read_bytes() == PAYLOAD
    assert files_in(dest.parent) == ["doc.pdf"]


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


def test_http_404_names_the_url(server, tmp_path):
    url = f"{server}/missing.pdf"
    dest = tmp_path / "missing.pdf"
    with pytest.raises(EmbedtuneError, match="HTTP 404") as e:
        fetch(Source(name="missing.pdf", url=url), dest, timeout_s=10)
    assert str(e.value).startswith(f"{url}: ")
    assert "\n" not in str(e.value)
    assert files_in(tmp_path) == []


def test_connection_refused_names_the_url(tmp_path):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/doc.pdf"
    with pytest.raises(EmbedtuneError, match="cannot fetch") as e:
        fetch(Source(name="doc.pdf", url=url), tmp_path / "doc.pdf", timeout_s=5)
    assert str(e.value).startswith(url)
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


def test_download_all_writes_both_splits(server, tmp_path):
    data = DataConfig(
        train=[Source(name="doc.pdf", url=f"{server}/doc.pdf")],
        validation=[Source(name="assert.pdf", pydoc_topics=["assert"])],
    )
    raw = tmp_path / "raw"
    manifest = download_all(data, raw)
    assert [r["name"] for r in manifest["train"]] == ["doc.pdf"]
    assert manifest["validation"][0]["url"] == "pydoc:assert"
    assert (raw / "train" / "doc.pdf").read_bytes() == PAYLOAD
    assert (raw / "validation" / "assert.pdf").read_bytes()[:5] == b"%PDF-"
    assert files_in(tmp_path) == ["raw"]


def test_download_all_failure_keeps_existing_raw(server, tmp_path):
    raw = tmp_path / "raw"
    (raw / "train").mkdir(parents=True)
    (raw / "train" / "old.pdf").write_bytes(b"produced earlier")
    data = DataConfig(
        train=[Source(name="doc.pdf", url=f"{server}/doc.pdf")],
        validation=[Source(name="gone.pdf", url=f"{server}/gone.pdf")],
    )
    with pytest.raises(EmbedtuneError, match="gone.pdf: HTTP 404"):
        download_all(data, raw)
    assert files_in(tmp_path) == ["raw"]  # no staging folder left behind
    assert files_in(raw) == ["train"]
    assert files_in(raw / "train") == ["old.pdf"]
    assert (raw / "train" / "old.pdf").read_bytes() == b"produced earlier"


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


def test_pydoc_pdf_is_byte_identical_across_calls():
    first = pydoc_pdf("loops.pdf", ["for", "while"])
    assert first.startswith(b"%PDF-")
    assert pydoc_pdf("loops.pdf", ["for", "while"]) == first
    assert pydoc_pdf("loops.pdf", ["while", "for"]) != first


def test_pydoc_pdf_is_byte_identical_across_processes():
    script = (
        "import hashlib, sys; from embedtune.download import pydoc_pdf; "
        "print(hashlib.sha256(pydoc_pdf('loops.pdf', ['for', 'while'])).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60
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
