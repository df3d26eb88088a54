"""Stage `mine`: training data that teaches ranking, from the base embeddings of the training split.

Usage: python -m embedtune.mine   (reads params.yaml; run by `dvc repro`)

Sets aside the seen-corpus questions, drops training questions whose chunk the base model does
not find (round-trip consistency), mines hard negatives for the rest and, with
`mine.cross_encoder`, scores them for distillation (see `embedtune.mine.negatives`). Writes
data/mined/train.json and metrics/mine.json. Its own stage, so a `train.*` change reruns only
`train` and `eval`. The validation split is never read here.
"""

from __future__ import annotations

from embedtune import io
from embedtune.config import EmbedConfig, MineConfig, load_params
from embedtune.embeddings import load_embeddings, load_encoder
from embedtune.mine.mined import MINED_FILE
from embedtune.mine.negatives import mine
from embedtune.stage import run_stage
from embedtune.weights import pick_device, resolve_model

PARAMS = {"seed": int, "embed": EmbedConfig, "mine": MineConfig}


def load_cross_encoder(cfg: MineConfig, embed: EmbedConfig):
    from sentence_transformers import CrossEncoder

    path = resolve_model(cfg.cross_encoder, "mine.cross_encoder")
    return CrossEncoder(path, device=pick_device(embed.device, "embed.device"))


def main() -> None:
    params = load_params(PARAMS)
    cfg = params.mine
    dataset = io.load_qa("train")
    emb = load_embeddings(io.EMBEDDINGS_DIR / "train.safetensors")
    encoder = load_encoder(params.embed) if cfg.negatives else None
    cross = load_cross_encoder(cfg, params.embed) if cfg.cross_encoder else None
    mined, counts = mine(emb, dataset, cfg, params.embed, params.seed, encoder, cross)
    io.write_json(MINED_FILE, mined.as_dict())
    io.write_json(io.METRICS_DIR / "mine.json", counts)
    print(
        f"{counts['questions']} training questions: {counts['seen_corpus']} set aside for the "
        f"seen-corpus evaluation, {counts['roundtrip_dropped']} dropped (base model misses "
        f"their chunk), {counts['training']} train with {counts['negatives']} hard negatives"
    )


if __name__ == "__main__":
    run_stage("mine", main)
