"""Stage `download`: fetch (or render) the configured documents into data/raw/<split>/.

Usage: python -m embedtune.download   (reads params.yaml; run by `dvc repro`)

Writes one file per source and data/manifest.json with url, size and sha256 of each. A source is
an http(s):// or file:// URL, a local path, or a list of Python language reference topics
rendered into a PDF.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from embedtune import io
from embedtune.config import DataConfig, Source, load_params
from embedtune.errors import EmbedtuneError, run_stage
from embedtune.pdf import render_pdf

USER_AGENT = "embedtune/0.1 (+https://dvc.org; document download stage)"
_BLOCK = 1 << 20


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


def download_all(data: DataConfig, raw_dir: Path) -> dict[str, list[dict]]:
    """Fetch every source of both splits; return the manifest. Nothing is kept on failure."""
    staging = raw_dir.with_name(raw_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    manifest = {}
    try:
        for split in io.SPLITS:
            sources = getattr(data, split)
            manifest[split] = [fetch(s, staging / split / s.name, data.timeout_s) for s in sources]
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(raw_dir, ignore_errors=True)
    staging.rename(raw_dir)
    return manifest


def main() -> None:
    params = load_params()
    manifest = download_all(params.data, io.RAW_DIR)
    io.write_json(io.MANIFEST, manifest)
    for split, records in manifest.items():
        for r in records:
            print(f"{split:<10} {r['name']:<32} {r['size']:>10,} B  sha256 {r['sha256'][:12]}")


if __name__ == "__main__":
    run_stage("download", main)
