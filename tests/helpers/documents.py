"""Documents to download and read: an HTTP server on 127.0.0.1, one document of every supported
type, rendered pydoc PDFs."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from pydoc_data.topics import topics

from embedtune.download.pdf import render_pdf
from embedtune.download.sources import pydoc_pdf

PAYLOAD = b"%PDF-1.4 not really a pdf, but bytes are bytes\n" * 100
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class RecordingHandler(SimpleHTTPRequestHandler):
    """Serves a folder and remembers the User-Agent of every request."""

    agents: list[str] = []

    def do_GET(self):
        self.agents.append(self.headers.get("User-Agent", ""))
        super().do_GET()

    def log_message(self, format, *args):
        pass


@contextlib.contextmanager
def serve(folder: Path):
    """Base URL of an HTTP server on 127.0.0.1 serving `folder`, while the block runs."""
    handler = functools.partial(RecordingHandler, directory=str(folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def make_docx(path: Path, paragraphs: list[str]) -> None:
    """A minimal Word document: the three parts a .docx reader needs."""
    ns = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    body = "".join(f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paragraphs)
    main = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org'
            '/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.'
            'openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="'
            f'application/xml"/><Override PartName="/word/document.xml" ContentType="{main}"/>'
            "</Types>",
        )
        z.writestr(
            "_rels/.rels",
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.'
            'openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" '
            f'Type="{rel}" Target="word/document.xml"/></Relationships>',
        )
        z.writestr(
            "word/document.xml",
            f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{ns}"><w:body>{body}'
            "</w:body></w:document>",
        )


def make_documents(folder: Path) -> Path:
    """One document of every supported type, one in a subfolder, plus files to be skipped."""
    (folder / "guide").mkdir(parents=True)
    (folder / "loops.pdf").write_bytes(pydoc_pdf("loops.pdf", ["for"]))
    (folder / "notes.txt").write_text("Lists are mutable sequences. Tuples are not.\n")
    (folder / "guide" / "dicts.md").write_text("# Dicts\n\nA dict maps keys to values.\n")
    (folder / "sets.html").write_text("<html><body><p>A set holds unique items.</p></body></html>")
    make_docx(folder / "strings.docx", ["Strings are immutable.", "They support slicing."])
    (folder / "image.png").write_bytes(b"\x89PNG not a document we read")
    (folder / ".hidden.txt").write_text("editor backup")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD.txt").write_text("not a document")
    return folder


def pdf_bytes(*names: str) -> bytes:
    return render_pdf("Python reference", [(n, topics[n]) for n in names])
