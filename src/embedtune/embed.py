"""Stage `embed`: frozen base-model embeddings of every query and chunk, computed once.

Usage: python -m embedtune.embed   (reads params.yaml; run by `dvc repro`)

Writes data/embeddings/<split>.safetensors with tensors `queries` and `corpus` (L2-normalised
float32 rows, whatever `embed.dtype` the model ran in) and, in its metadata, the ids of the rows
in order. `train` and `eval` read these, so changing a training parameter never re-embeds
anything.
"""

from __future__ import annotations

from embedtune import io
from embedtune.config import EmbedConfig, load_params
from embedtune.embeddings import embed_dataset, load_encoder, save_embeddings
from embedtune.errors import run_stage

PARAMS = {"embed": EmbedConfig}


def main() -> None:
    params = load_params(PARAMS)
    datasets = {split: io.load_qa(split) for split in io.SPLITS}  # fail before loading the model
    encoder = load_encoder(params.embed)
    for split, dataset in datasets.items():
        emb = embed_dataset(encoder, dataset, params.embed)
        save_embeddings(io.EMBEDDINGS_DIR / f"{split}.safetensors", emb)
        print(
            f"{split:<10} {len(emb.query_ids):>5} queries, {len(emb.corpus_ids):>5} chunks, "
            f"dim {emb.corpus.shape[1]}"
        )


if __name__ == "__main__":
    run_stage("embed", main)
