"""Stage `download`: fetch (or render) the configured documents into data/raw/<split>/.

Usage: python -m embedtune.download   (reads params.yaml; run by `dvc repro`)

Writes one file per source and data/manifest.json with url, size and sha256 of each. A source is
an http(s):// or file:// URL, a local path, or a list of Python language reference topics
rendered into a PDF. With `data.local_dir` (`data=local`) the documents of that folder are copied
instead, split into train and validation by file (`split_local`).
"""

from __future__ import annotations

from embedtune import io
from embedtune.config import DataConfig, load_params
from embedtune.download.sources import download_all
from embedtune.stage import run_stage

PARAMS = {"data": DataConfig}


def main() -> None:
    params = load_params(PARAMS)
    manifest = download_all(params.data, io.RAW_DIR)
    io.write_json(io.MANIFEST, manifest)
    for split, records in manifest.items():
        for r in records:
            print(f"{split:<10} {r['name']:<32} {r['size']:>10,} B  sha256 {r['sha256'][:12]}")


if __name__ == "__main__":
    run_stage("download", main)
