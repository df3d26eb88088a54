"""The card's "Loading" section: how to load the exported folder with sentence-transformers and
LlamaIndex, the nudge files, and pushing it to the Hugging Face Hub."""

from __future__ import annotations

from embedtune import io

FOLDER = str(io.EXPORTED_MODEL_DIR)  # as the loading code quotes it
CHUNK_EMBEDDINGS, CHUNKS = "chunk_embeddings.safetensors", "chunks.jsonl"  # nudge only
LLAMAINDEX_ADAPTER = "llamaindex_adapter"  # adapters only: models/tuned's files
# The LlamaIndex class of each adapter method (models/tuned uses its parameter names).
LLAMAINDEX_CLASSES = {"adapter_linear": "LinearLayer", "adapter_2layer": "TwoLayerNN"}


def loading(method: str, embed: dict, adapter: bool, chunks: int) -> str:
    """How to load the folder; with `adapter`, LlamaIndex's adapter wrapper too; with `chunks`,
    the moved chunk embeddings."""
    query, document = embed["query_prefix"], embed["document_prefix"]
    parts = [
        "### Loading",
        "sentence-transformers (`encode_query` and `encode_document` add the prefixes):",
        f"""```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{FOLDER}")
queries = model.encode_query(["How do generators work?"])
documents = model.encode_document(["A generator function contains yield."])
scores = model.similarity(queries, documents)  # cosine, as embedtune ranks
```""",
        "LlamaIndex (its `HuggingFaceEmbedding` replaces the saved prompts with the "
        "instructions it is given, so pass the prefixes):",
        f"""```python
from llama_index.embeddings.huggingface import HuggingFaceEmbedding

embed_model = HuggingFaceEmbedding(
    model_name="{FOLDER}", query_instruction={query!r}, text_instruction={document!r}
)
```""",
    ]
    if adapter:
        parts += llamaindex_adapter(method)
    if chunks:
        parts += nudged_chunks()
    parts.append(
        "Push the folder as it is, this card and the files beside it included, with "
        'sentence-transformers\' own `SentenceTransformer(path).push_to_hub("user/name", '
        "local_model_path=path)`."
    )
    return "\n\n".join(parts)


def llamaindex_adapter(method: str) -> list[str]:
    cls = LLAMAINDEX_CLASSES.get(method, "BaseAdapter")
    return [
        "`HuggingFaceEmbedding` encodes without a task, which the Router sends to the document "
        "route (the base model): for the tuned queries, wrap it in LlamaIndex's "
        f"`AdapterEmbeddingModel` with the adapter in `{LLAMAINDEX_ADAPTER}/` (models/tuned's "
        "files: config.json with LlamaIndex's parameter names, weights in safetensors):",
        f"""```python
import json
from pathlib import Path

from llama_index.embeddings.adapter import AdapterEmbeddingModel
from llama_index.embeddings.adapter.utils import {cls}
from safetensors.torch import load_file


class Adapter:
    @staticmethod
    def load(path):
        config = json.loads(Path(path, "config.json").read_text())
        config.pop("method")
        adapter = {cls}(**config)
        adapter.load_state_dict(load_file(str(Path(path, "model.safetensors"))))
        return adapter.eval()


tuned_model = AdapterEmbeddingModel(
    base_embed_model=embed_model,
    adapter_path="{FOLDER}/{LLAMAINDEX_ADAPTER}",
    adapter_cls=Adapter,
)
```""",
    ]


def nudged_chunks() -> list[str]:
    return [
        f"The moved chunk embeddings: row i of `{CHUNK_EMBEDDINGS}` (tensor `embeddings`, "
        f"float32, not normalised: rank by cosine) is the chunk on line i of `{CHUNKS}` "
        "(`id`, `text`). Index those vectors for those chunks and `encode_document` every other "
        "chunk; a chunk with the same text (whitespace aside) takes the moved vector too.",
        f"""```python
import json

from safetensors.torch import load_file

vectors = load_file("{FOLDER}/{CHUNK_EMBEDDINGS}")["embeddings"]
with open("{FOLDER}/{CHUNKS}") as f:
    chunks = [json.loads(line) for line in f]
```""",
    ]
