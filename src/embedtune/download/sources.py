"""Where documents come from: URLs, local paths, rendered Python reference topics, or a folder
split into train and validation by file. Fetches are atomic and check pinned sha256s, then
what came back: never empty, and a .pdf must be a PDF (not an HTML page, not text/html).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from embedtune import io
from embedtune.config import DataConfig, Source
from embedtune.download.pdf import render_pdf
from embedtune.errors import EmbedtuneError
from embedtune.io import PARAMS_FILE
from embedtune.reading.bad_documents import HEADER_WINDOW, PDF_MAGIC, BadDocument, not_a_pdf
from embedtune.reading.readers import read_document

USER_AGENT = "embedtune/0.1 (+https://dvc.org; document download stage)"
_BLOCK = 1 << 20
LOCAL_EXTENSIONS = (".pdf", ".txt", ".md", ".html", ".docx")  # what data.local_dir may hold


def pydoc_pdf(name: str, topics: list[str]) -> bytes:
    """Render topics of the Python language reference shipped with CPython into a PDF."""
    from pydoc_data.topics import topics as reference

    unknown = [t for t in topics if t not in reference]
    if unknown:
        raise EmbedtuneError(
            f"document {name!r}: unknown pydoc topic {unknown[0]!r} "
            f"(see `python -c 'import pydoc_data.topics as t; print(sorted(t.topics))'`)"
        )
    title = Path(name).stem.replace("-", " ").replace("_", " ").capitalize()
    return render_pdf(f"Python language reference: {title}", [(t, reference[t]) for t in topics])


def _open_url(url: str, timeout_s: float):
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("http", "https", "file"):
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        return urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310 (schemes checked)
    if parsed.scheme in ("",) or len(parsed.scheme) == 1:  # a plain path (or C:\ on Windows)
        return Path(url).expanduser().open("rb")
    raise EmbedtuneError(
        f"{url}: unsupported URL scheme {parsed.scheme!r} (use http, https, file or a local path)"
    )


def fetch(source: Source, dest: Path, timeout_s: float, check: bool = True) -> dict:
    """Fetch one source into `dest` atomically, checking its pinned sha256 and then (`check`)
    that the bytes are what its name says; return its record."""
    digest = hashlib.sha256()
    size, head, content_type = 0, b"", None
    with io.atomic_path(dest) as tmp, tmp.open("wb") as out:
        if source.pydoc_topics is not None:
            data = pydoc_pdf(source.name, source.pydoc_topics)
            out.write(data)
            digest.update(data)
            size = len(data)
        else:
            try:
                with _open_url(source.url, timeout_s) as response:
                    content_type = _content_type(source.url, response)
                    while block := response.read(_BLOCK):
                        out.write(block)
                        digest.update(block)
                        size += len(block)
                        head += block[: HEADER_WINDOW - len(head)]
            except urllib.error.HTTPError as err:
                raise EmbedtuneError(f"{source.url}: HTTP {err.code} {err.reason}") from None
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", None) or err.strerror or err
                raise EmbedtuneError(f"{source.url}: cannot fetch ({reason})") from None
        out.flush()
        sha256 = digest.hexdigest()
        if source.sha256 and source.sha256.lower() != sha256:
            raise EmbedtuneError(
                f"{source.url or source.name}: sha256 is {sha256}, but data.*.sha256 pins "
                f"{source.sha256}; fix the pin in conf/data/ if the document really changed"
            )
        if check and source.url is not None:
            _check_fetched(source, size, head, content_type)
    url = source.url if source.url is not None else "pydoc:" + ",".join(source.pydoc_topics)
    return {"name": source.name, "url": url, "size": size, "sha256": sha256}


def _content_type(url: str, response) -> str | None:
    """The HTTP Content-Type (no parameters); None for a local file, whose type is a guess."""
    if not url.startswith(("http:", "https:")) or "content-type" not in response.headers:
        return None
    return response.headers.get_content_type()


def _check_fetched(source: Source, size: int, head: bytes, content_type: str | None) -> None:
    if size == 0:
        raise BadDocument(source.url, "empty", "came back empty (0 bytes)", "check the URL")
    if not source.name.lower().endswith(".pdf"):
        return
    if content_type == "text/html":
        raise BadDocument(
            source.url,
            "html_page",
            f"the server sent an HTML page (Content-Type text/html), not the PDF {source.name}",
            "check the URL: it may need a login, or point at a landing page instead of the PDF",
        )
    if PDF_MAGIC not in head:
        raise not_a_pdf(source.url, head, fix="check the URL")


def scan_local(folder: Path) -> tuple[list[str], list[str]]:
    """Sorted paths (relative, with /) of the documents under `folder`, and a line for each
    file left out: another type, or a symlink to outside the folder (never followed). Hidden
    files and folders are skipped, and so are symlinked folders."""
    if not folder.is_dir():
        raise EmbedtuneError(f"data.local_dir: {folder} is not a folder")
    inside, names, ignored = folder.resolve(), [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for file in files:
            path = Path(root) / file
            name = path.relative_to(folder).as_posix()
            if file.startswith("."):
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(inside):
                ignored.append(f"{folder / name}: a symlink to outside {folder}, not followed")
            elif path.suffix.lower() not in LOCAL_EXTENSIONS:
                ignored.append(f"{folder / name}: unsupported type, not one of {_TYPES}")
            elif path.is_file():
                names.append(name)
    if not names:
        raise EmbedtuneError(f"data.local_dir: {folder} holds no {_TYPES} files")
    return sorted(names), sorted(ignored)


_TYPES = ", ".join(LOCAL_EXTENSIONS)


def local_documents(folder: Path) -> list[str]:
    """Sorted paths (relative, with /) of the documents under `folder` (see `scan_local`)."""
    return scan_local(folder)[0]


Problem = Callable[[str], BadDocument | None]


def split_local(
    names: list[str], validation_fraction: float, problem: Problem = lambda name: None
) -> dict[str, list[str]]:
    """Split documents by file: the round(fraction * n) readable names with the smallest
    sha256 validate; the rest train, files that cannot be read (`problem`) among them, for
    `chunk` to stop at or skip.

    Depends on the names (and which files are readable) only, never on the order files were
    found or their dates; adding a document moves at most one other across. At least one
    readable file lands on each side: files are read in sha256 order until both sides have
    theirs, so a folder of readable files reads only the validation ones and one more.
    """
    if len(names) < 2:
        raise EmbedtuneError(
            f"data.local_dir needs at least 2 documents (one to train, one to validate), "
            f"found {len(names)}: {', '.join(names)}"
        )
    count = min(max(1, round(validation_fraction * len(names))), len(names) - 1)
    ranked = sorted(names, key=lambda n: (hashlib.sha256(n.encode()).hexdigest(), n))
    validation, bad, trains = [], [], False
    for name in ranked:
        if len(validation) == count and trains:
            break
        if (found := problem(name)) is not None:
            bad.append(found)
        elif len(validation) < count:
            validation.append(name)
        else:
            trains = True
    if not trains and len(validation) > 1:  # too few readable files for `count`
        validation.pop()
        trains = True
    if not trains:
        unreadable = "; ".join(f"{b.name}: {b.reason}" for b in bad)
        raise EmbedtuneError(
            f"data.local_dir needs at least 2 readable documents (one to train, one to "
            f"validate), found {len(validation)} of {len(names)}; {unreadable}"
        )
    return {
        "train": sorted(n for n in names if n not in validation),
        "validation": sorted(validation),
    }


def _readable(folder: Path) -> Problem:
    def problem(name: str) -> BadDocument | None:
        try:
            read_document(folder / name, f"{folder / name}")
        except BadDocument as found:
            return found
        return None

    return problem


def _sources(data: DataConfig) -> dict[str, list[Source]]:
    if data.local_dir is None:
        return {split: getattr(data, split) for split in io.SPLITS}
    folder = Path(data.local_dir).expanduser()
    names, ignored = scan_local(folder)
    for line in ignored:
        print(f"ignored    {line}")
    split = split_local(names, data.validation_fraction, _readable(folder))
    # Not validated: the names are paths found under the folder (subfolders too, never hidden),
    # where a listed source's name must be a plain file name.
    return {
        s: [Source.model_construct(name=n, url=str(folder / n)) for n in split[s]]
        for s in io.SPLITS
    }


@contextmanager
def naming_the_key(key: str, source: Source, listed: bool) -> Iterator[None]:
    """A listed source that cannot be fetched is named by its key in params.yaml as well; the
    default recipe's (data=arxiv, arXiv papers) also says how to run offline."""
    try:
        yield
    except EmbedtuneError as err:
        if not listed or source.url is None:
            raise
        where = f"{key} in {PARAMS_FILE}"
        if urllib.parse.urlparse(source.url).netloc.endswith("arxiv.org"):
            where += ", from data=arxiv, the default recipe's: offline, pass -S experiment=cpu"
        raise EmbedtuneError(f"{err} [{where}]") from None


def download_all(data: DataConfig, raw_dir: Path) -> dict[str, list[dict]]:
    """Fetch every source of both splits; return the manifest. Nothing is kept on failure."""
    staging = raw_dir.with_name(raw_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    manifest = {}
    try:
        for split, sources in _sources(data).items():
            # a local folder's bad files are for `chunk` to stop at or skip (chunk.on_bad_document)
            check = data.local_dir is None
            manifest[split] = []
            for index, source in enumerate(sources):
                with naming_the_key(f"data.{split}[{index}]", source, listed=check):
                    record = fetch(source, staging / split / source.name, data.timeout_s, check)
                manifest[split].append(record)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(raw_dir, ignore_errors=True)
    staging.rename(raw_dir)
    return manifest
