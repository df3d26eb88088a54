"""Method `full`: every weight of the base model, fine-tuned with sentence-transformers.

The tuned model re-encodes every text (queries and chunks) with the fine-tuned model; it is a
sentence-transformers folder (safetensors, nothing pickled) whose config.json also carries
`"method": "full"`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, SerializeAsAny, field_validator, model_validator

from embedtune import io
from embedtune.config import EmbedConfig
from embedtune.embeddings import BlockStore, embed_texts, encoder_key, load_encoder
from embedtune.train.losses import LossConfig, loss_config
from embedtune.train.methods.base import METHODS, Method, TrainConfig, TrainingInputs, TrainingLog
from embedtune.weights import encoder_dtype, pick_device


class FullConfig(TrainConfig):
    method: Literal["full"]
    optimizer: Literal["adamw"]  # the trainer's optimiser
    warmup_ratio: float = Field(ge=0, lt=1)  # fraction of steps with a linear warm-up
    # conf/train/loss/*.yaml; SerializeAsAny: model_dump keeps the loss's own keys too
    loss: SerializeAsAny[LossConfig]
    matryoshka_dims: list[int]  # also train these truncated dimensions, e.g. [256, 128, 64]
    hard_negatives: int = Field(ge=0)  # mined negatives per question (stage mine; 0: in-batch)
    max_seq_length: int | None = Field(gt=0)  # truncate texts (null: the model's own limit)
    # weight of the fine-tuned weights in the model kept: base + wise_ft * (tuned - base)
    wise_ft: float = Field(gt=0, le=1)

    @field_validator("loss", mode="before")
    @classmethod
    def _known_loss(cls, raw):
        return raw if isinstance(raw, LossConfig) else loss_config(raw)

    @model_validator(mode="after")
    def _dims(self) -> FullConfig:
        if any(d <= 0 for d in self.matryoshka_dims):
            raise ValueError("train.matryoshka_dims must be > 0")
        return self


class FullModel:
    """A fine-tuned sentence-transformers model: re-encodes every text, ignoring base embeddings.

    Rows are L2-normalised float32 on the CPU; each text gets its prefix first, as in `embed`.
    """

    method = "full"

    def __init__(
        self,
        encoder,
        query_prefix: str,
        document_prefix: str,
        batch_size: int,
        folder: Path | None = None,
    ):
        self.encoder = encoder
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.batch_size = batch_size
        self.folder = folder  # the folder it was loaded from (None: trained in this process)
        self.blocks: BlockStore | None = None  # see `cached`

    def encode_queries(self, texts: list[str], base: torch.Tensor) -> torch.Tensor:
        return self._encode(texts, self.query_prefix)

    def encode_corpus(self, texts: list[str], base: torch.Tensor) -> torch.Tensor:
        return self._encode(texts, self.document_prefix)

    def _encode(self, texts: list[str], prefix: str) -> torch.Tensor:
        if self.blocks is None:
            return embed_texts(self.encoder, texts, prefix, self.batch_size)
        return self.blocks.embed(texts, prefix)

    def cached(self, root: Path | None, read_only: bool = False) -> FullModel:
        """This model encoding block by block (`BlockStore`), the blocks kept in a folder under
        `root` named by the content of every file it was loaded from and the device kind and
        dtype it runs in, so retrained weights never read another model's rows. Kept nowhere
        when `root` is None or the model was not loaded from a folder."""
        folder = None
        if root is not None and self.folder is not None:
            folder = root / encoder_key(self.encoder, self.method, files_digest(self.folder))
        args = (self.query_prefix, self.document_prefix, self.batch_size, self.folder)
        model = FullModel(self.encoder, *args)
        model.blocks = BlockStore(self.encoder, self.batch_size, folder, read_only=read_only)
        return model

    def save(self, folder: Path) -> None:
        self.encoder.save_pretrained(str(folder), create_model_card=False, safe_serialization=True)
        config = json.loads((folder / "config.json").read_text())
        io.write_json(folder / "config.json", {**config, "method": self.method})


@METHODS.register("full")
class FullMethod(Method):
    Config = FullConfig

    def train(
        self, inputs: TrainingInputs, cfg: FullConfig, seed: int, log: TrainingLog
    ) -> FullModel:
        from embedtune.train.methods.full_training import train_full

        embed = inputs.embed
        model = train_full(inputs.encoder(), inputs, cfg, seed, log)
        if model is None:  # training did not beat the base model beyond noise: ship the base
            model = load_encoder(embed, for_training=True)
            model.prompts = {"query": embed.query_prefix, "document": embed.document_prefix}
        return FullModel(model, embed.query_prefix, embed.document_prefix, embed.batch_size)

    def load(self, folder: Path, embed: EmbedConfig | None = None) -> FullModel:
        """The fine-tuned model in `folder`; prefixes, batch size and device from `embed` when
        given, else the prefixes saved with the model (its `query`/`document` prompts)."""
        from sentence_transformers import SentenceTransformer

        io.check_safetensors(Path(folder) / "model.safetensors", stage="train")
        device = pick_device(embed.device if embed else "auto", "embed.device")
        dtype = encoder_dtype(embed.dtype if embed else "auto", device)
        encoder = SentenceTransformer(str(folder), device=device, model_kwargs={"dtype": dtype})
        folder = Path(folder)
        if embed is not None:
            prefixes = (embed.query_prefix, embed.document_prefix, embed.batch_size)
            return FullModel(encoder, *prefixes, folder)
        prompts = encoder.prompts or {}
        return FullModel(encoder, prompts.get("query", ""), prompts.get("document", ""), 32, folder)


def files_digest(folder: Path) -> str:
    """sha256 of every file under `folder`, with its path in it: the weights, and the configs
    that shape the rows (sequence length, pooling)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        files[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode("utf-8")).hexdigest()
