"""Where documents come from: URLs, local paths, rendered Python reference topics, or a folder
split into train and validation by file. Fetches are atomic and check pinned sha256s.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from embedtune import io
from embedtune.config import DataConfig, Source
from embedtune.errors import EmbedtuneError
from embedtune.pdf import render_pdf

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


def fetch(source: Source, dest: Path, timeout_s: float) -> dict:
    """Fetch one source into `dest` atomically, checking its pinned sha256; return its record."""
    digest = hashlib.sha256()
    size = 0
    with io.atomic_path(dest) as tmp, tmp.open("wb") as out:
        if source.pydoc_topics is not None:
            data = pydoc_pdf(source.name, source.pydoc_topics)
            out.write(data)
            digest.update(data)
            size = len(data)
        else:
            try:
                with _open_url(source.url, timeout_s) as response:
                    while block := response.read(_BLOCK):
                        out.write(block)
                        digest.update(block)
                        size += len(block)
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
    url = source.url if source.url is not None else "pydoc:" + ",".join(source.pydoc_topics)
    return {"name": source.name, "url": url, "size": size, "sha256": sha256}


def local_documents(folder: Path) -> list[str]:
    """Sorted paths (relative, with /) of the documents under `folder`; hidden files skipped."""
    if not folder.is_dir():
        raise EmbedtuneError(f"data.local_dir: {folder} is not a folder")
    names = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in LOCAL_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not names:
        raise EmbedtuneError(
            f"data.local_dir: {folder} holds no {', '.join(LOCAL_EXTENSIONS)} files"
        )
    return names


def split_local(names: list[str], validation_fraction: float) -> dict[str, list[str]]:
    """Split documents by file: the round(fraction * n) names with the smallest sha256 validate.

    Depends on the names only, never on the order files were found or their dates; adding a
    document moves at most one other across. At least one file lands on each side.
    """
    if len(names) < 2:
        raise EmbedtuneError(
            f"data.local_dir needs at least 2 documents (one to train, one to validate), "
            f"found {len(names)}: {', '.join(names)}"
        )
    count = min(max(1, round(validation_fraction * len(names))), len(names) - 1)
    ranked = sorted(names, key=lambda n: (hashlib.sha256(n.encode()).hexdigest(), n))
    validation = set(ranked[:count])
    return {
        "train": sorted(n for n in names if n not in validation),
        "validation": sorted(validation),
    }


def _sources(data: DataConfig) -> dict[str, list[Source]]:
    if data.local_dir is None:
        return {split: getattr(data, split) for split in io.SPLITS}
    folder = Path(data.local_dir).expanduser()
    split = split_local(local_documents(folder), data.validation_fraction)
    # Not validated: the names are paths found under the folder (subfolders too, never hidden),
    # where a listed source's name must be a plain file name.
    return {
        s: [Source.model_construct(name=n, url=str(folder / n)) for n in split[s]]
        for s in io.SPLITS
    }


def download_all(data: DataConfig, raw_dir: Path) -> dict[str, list[dict]]:
    """Fetch every source of both splits; return the manifest. Nothing is kept on failure."""
    staging = raw_dir.with_name(raw_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    manifest = {}
    try:
        for split, sources in _sources(data).items():
            manifest[split] = [fetch(s, staging / split / s.name, data.timeout_s) for s in sources]
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(raw_dir, ignore_errors=True)
    staging.rename(raw_dir)
    return manifest
