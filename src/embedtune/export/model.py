"""The tuned model as one sentence-transformers folder, whatever the method.

`exported(tuned, sources)` gives its modules, in the order `eval` applies them: the base
model's modules, L2-normalisation (`embed_texts` normalises), then for an adapter a `Router`
that maps queries (`encode_query`) and leaves documents (`encode_document`) as they are. Only
sentence-transformers' own modules are used, so `SentenceTransformer(folder)` loads it without
`trust_remote_code`. Each kind of tuned model registers its exporter here
(`@exported.register`), each adapter network its modules (`@adapter_modules.register`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import singledispatch
from pathlib import Path

import torch
from torch import nn

from embedtune import io
from embedtune.embeddings import SplitEmbeddings
from embedtune.errors import EmbedtuneError
from embedtune.export.usage import CHUNK_EMBEDDINGS, CHUNKS, LLAMAINDEX_ADAPTER
from embedtune.train.methods.adapters import AdapterModel
from embedtune.train.methods.full import FullModel
from embedtune.train.methods.linear import LinearAdapter
from embedtune.train.methods.nudge import NudgeModel, text_key
from embedtune.train.methods.two_layer import TwoLayerAdapter


@dataclass(frozen=True)
class NudgedChunks:
    """Moved chunk embeddings, row i being chunk `ids[i]` with text `texts[i]`."""

    ids: list[str]
    texts: list[str]
    embeddings: torch.Tensor


@dataclass
class Exported:
    modules: list[nn.Module]  # sentence-transformers modules, in order
    adapter: AdapterModel | None = None  # saved as models/tuned saves it, for LlamaIndex
    chunks: NudgedChunks | None = None


@dataclass(frozen=True)
class Sources:
    """What an exporter may need, loaded when asked for."""

    base: Callable[[], nn.Module]  # the base SentenceTransformer, float32
    train: Callable[[], tuple[dict, SplitEmbeddings]]  # training split and its base embeddings


@singledispatch
def exported(tuned, sources: Sources) -> Exported:
    raise EmbedtuneError(
        f"train.method={tuned.method}: no exporter for {type(tuned).__name__}; register one "
        "with `@exported.register` in embedtune/export/model.py"
    )


@exported.register(AdapterModel)
def _adapter(tuned: AdapterModel, sources: Sources) -> Exported:
    from sentence_transformers.sentence_transformer.modules import Normalize, Router

    normalize = Normalize()  # one module, saved once, on both routes
    routes = {"query": [normalize, *adapter_modules(tuned.adapter)], "document": [normalize]}
    router = Router(routes, default_route="document")
    return Exported([*sources.base(), router], adapter=tuned)


@exported.register(FullModel)
def _full(tuned: FullModel, sources: Sources) -> Exported:
    return Exported(normalised(list(tuned.encoder)))


@exported.register(NudgeModel)
def _nudge(tuned: NudgeModel, sources: Sources) -> Exported:
    dataset, emb = sources.train()
    return Exported(normalised(list(sources.base())), chunks=nudged_chunks(tuned, dataset, emb))


def normalised(modules: list[nn.Module]) -> list[nn.Module]:
    """The modules, ending with L2-normalisation as `eval`'s embeddings do."""
    from sentence_transformers.sentence_transformer.modules import Normalize

    return modules if isinstance(modules[-1], Normalize) else [*modules, Normalize()]


def dense(weight: torch.Tensor, bias: torch.Tensor | None, activation: nn.Module) -> nn.Module:
    from sentence_transformers.sentence_transformer.modules import Dense

    return Dense(
        weight.shape[1],
        weight.shape[0],
        bias=bias is not None,
        activation_function=activation,
        init_weight=weight.detach().clone(),
        init_bias=None if bias is None else bias.detach().clone(),
    )


@singledispatch
def adapter_modules(adapter: nn.Module) -> list[nn.Module]:
    raise EmbedtuneError(
        f"no sentence-transformers modules for the adapter {type(adapter).__name__}; register "
        "them with `@adapter_modules.register` in embedtune/export/model.py"
    )


@adapter_modules.register(LinearAdapter)
def _linear(adapter: LinearAdapter) -> list[nn.Module]:
    return [dense(adapter.linear.weight, adapter.linear.bias, nn.Identity())]


@adapter_modules.register(TwoLayerAdapter)
def _two_layer(adapter: TwoLayerAdapter) -> list[nn.Module]:
    """`q + a (W2 relu(W1 q + b1) + b2)` as two `Dense` layers. The input crosses the ReLU
    layer as relu(q) and relu(-q), whose difference is q, so the second layer adds it back."""
    w1, b1 = adapter.linear1.weight.detach(), adapter.linear1.bias.detach()
    w2, b2 = adapter.linear2.weight.detach(), adapter.linear2.bias.detach()
    if not adapter.add_residual:
        return [dense(w1, b1, nn.ReLU()), dense(w2, b2, nn.Identity())]
    a = adapter.residual_weight.detach()
    eye = torch.eye(adapter.in_features)
    first = dense(torch.cat([w1, eye, -eye]), torch.cat([b1, torch.zeros(2 * len(eye))]), nn.ReLU())
    return [first, dense(torch.cat([a * w2, eye, -eye], dim=1), a * b2, nn.Identity())]


def nudged_chunks(tuned: NudgeModel, dataset: dict, emb: SplitEmbeddings) -> NudgedChunks:
    """The training chunks whose embedding the model moved, with the embedding `eval` gives
    them, in the order of the split's embeddings file."""
    texts = [dataset["corpus"][cid] for cid in emb.corpus_ids]
    moved = set(tuned.keys)
    rows = [i for i, text in enumerate(texts) if text_key(text) in moved]
    vectors = tuned.encode_corpus(texts, emb.corpus)[rows].float().contiguous()
    return NudgedChunks([emb.corpus_ids[i] for i in rows], [texts[i] for i in rows], vectors)


def save_exported(result: Exported, folder: Path, prompts: dict, fields: dict, card: str) -> None:
    """Write the sentence-transformers folder (its model card, filled with `fields`, followed by
    `card`) and the files beside it into the new folder `folder`."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        modules=result.modules,
        device="cpu",
        prompts=prompts,
        similarity_fn_name="cosine",  # eval ranks by cosine similarity
        model_card_data=card_data(fields),
    )
    model.save(str(folder))
    readme = folder / "README.md"
    readme.write_text(readme.read_text().rstrip("\n") + "\n\n" + card)
    if result.adapter is not None:
        (folder / LLAMAINDEX_ADAPTER).mkdir()
        result.adapter.save(folder / LLAMAINDEX_ADAPTER)
    if result.chunks is not None:
        save_chunks(result.chunks, folder)


def card_data(fields: dict):
    """sentence-transformers' card data, offline: it would otherwise look the base model up on
    the Hub."""
    from sentence_transformers import SentenceTransformerModelCardData

    data = SentenceTransformerModelCardData(
        language=fields["language"],
        model_name=fields["model_name"],
        tags=[
            "sentence-transformers",
            "sentence-similarity",
            "feature-extraction",
            *fields["tags"],
        ],
        local_files_only=True,
    )
    data.base_model = fields["base_model"]
    return data


def save_chunks(chunks: NudgedChunks, folder: Path) -> None:
    from safetensors.torch import save_file

    rows = [{"id": cid, "text": text} for cid, text in zip(chunks.ids, chunks.texts, strict=True)]
    save_file({"embeddings": chunks.embeddings}, str(folder / CHUNK_EMBEDDINGS))
    io.write_jsonl(folder / CHUNKS, rows)
