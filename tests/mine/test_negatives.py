"""Stage `mine`: seen-corpus questions set aside, round-trip filter, hard negatives from
sentence-transformers' `mine_hard_negatives` (never the positive, its text, or a chunk that
overlaps it) and cross-encoder scores, on all-MiniLM-L6-v2 and a small cross-encoder built here.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from embedtune import io
from embedtune.embeddings import embed_dataset, save_embeddings
from embedtune.mine.mined import MINED_FILE, Mined, load_mined
from embedtune.mine.negatives import (
    base_ranks,
    mine,
    pick_negatives,
    seen_corpus_questions,
    shares_run,
)
from embedtune.text import words
from tests.helpers import ROOT, cfg
from tests.helpers.methods import split

EMBED = cfg("embed")
TOPICS = [
    ("loops", "A for loop runs its body once for every item of a sequence such as a list."),
    ("while", "A while loop repeats its body as long as its condition stays true."),
    ("import", "The import statement finds a module, loads it and binds a name to it."),
    ("raise", "The raise statement signals an exception, which unwinds the call stack."),
    ("with", "The with statement calls the enter and exit methods of a context manager."),
    ("lambda", "A lambda expression creates a small anonymous function from one expression."),
    ("yield", "A function that contains yield returns a generator when it is called."),
    ("assert", "The assert statement raises AssertionError when its condition is false."),
]
QUESTIONS = {
    "loops": "How do I repeat code for each item of a list?",
    "while": "How do I repeat code until a condition becomes false?",
    "import": "How do I load a module into my program?",
    "raise": "How do I signal that an error happened?",
    "with": "What calls the enter and exit methods of a context manager?",
    "lambda": "How do I write a small anonymous function?",
    "yield": "What does calling a function with yield give back?",
    "assert": "What checks a condition and fails when it is false?",
}


def dataset(extra: dict[str, str] | None = None) -> dict:
    corpus = {f"c_{name}": text for name, text in TOPICS}
    corpus.update(extra or {})
    return {
        "queries": {f"q_{name}": q for name, q in QUESTIONS.items()},
        "corpus": corpus,
        "relevant_docs": {f"q_{name}": [f"c_{name}"] for name in QUESTIONS},
        "mode": "text",
    }


def mine_cfg(**updates):
    base = {"seen_corpus_fraction": 0.0, "roundtrip_top_k": 0, "relative_margin": 0.05}
    return cfg("mine", **{**base, **updates})


# --- roles and filter -----------------------------------------------------------------------


def test_seen_corpus_questions_are_a_seeded_fraction_in_order():
    ids = [f"q{i}" for i in range(40)]
    chosen = seen_corpus_questions(ids, 0.2, seed=1)
    assert len(chosen) == 8 and chosen == [q for q in ids if q in set(chosen)]
    assert seen_corpus_questions(list(reversed(ids)), 0.2, 1) == list(reversed(chosen))
    assert seen_corpus_questions(ids, 0.2, 2) != chosen
    assert seen_corpus_questions(ids, 0.0, 1) == []
    capped = seen_corpus_questions(ids, 0.2, 1, cap=3)  # the first 3 of the same hash order
    assert len(capped) == 3 and set(capped) < set(chosen)
    assert seen_corpus_questions(ids, 0.2, 1, cap=8) == chosen


def test_base_ranks_use_the_one_tie_rule():
    emb, data = split(
        [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], {0: [1], 1: [2]}
    )
    # q0's chunk c1 ties with c0, which comes first: it counts against the model (rank 2).
    assert base_ranks(emb, data, ["q0", "q1"]) == {"q0": 2, "q1": 1}


def test_round_trip_drops_questions_whose_chunk_the_base_model_misses(minilm):
    data = dataset()
    data["queries"]["q_raise"] = "What does a generator function return when called?"  # off topic
    emb = embed_dataset(minilm, data, EMBED)
    mined, counts = mine(emb, data, mine_cfg(roundtrip_top_k=1, negatives=0), EMBED, 0)
    assert "q_raise" in mined.dropped and mined.dropped["q_raise"] > 1
    assert "q_raise" not in mined.negatives and "q_loops" in mined.negatives
    assert counts["roundtrip_dropped"] == len(mined.dropped) >= 1
    assert counts["training"] + counts["roundtrip_dropped"] == counts["questions"] == 8
    assert mined.training(list(data["queries"])) == [
        q for q in data["queries"] if q in mined.negatives
    ]


def test_seen_corpus_questions_are_never_filtered_or_trained(minilm):
    data = dataset()
    emb = embed_dataset(minilm, data, EMBED)
    everything = cfg("mine", seen_corpus_fraction=0.5, roundtrip_top_k=1, negatives=0)
    mined, counts = mine(emb, data, everything, EMBED, 0)
    assert counts["seen_corpus"] == 4 == len(mined.seen_corpus)
    assert not set(mined.seen_corpus) & (set(mined.dropped) | set(mined.negatives))
    assert counts["training"] + counts["roundtrip_dropped"] == 4


# --- hard negatives -------------------------------------------------------------------------


def test_shares_run():
    a = words("the quick brown fox jumps over the lazy dog")
    assert shares_run(a, words("a quick brown fox jumps high"), 4)
    assert not shares_run(a, words("a quick brown fox jumps high"), 5)
    assert not shares_run(a[:2], a, 3)


def test_pick_negatives_skips_overlapping_chunks_and_keeps_order():
    data = dataset({"c_loops_tail": "once for every item of a sequence such as a list, and more"})
    offered = {
        "q_loops": [
            data["corpus"]["c_loops_tail"],
            data["corpus"]["c_while"],
            data["corpus"]["c_yield"],
        ]
    }
    chosen, skipped = pick_negatives(data, ["q_loops"], offered, mine_cfg(negatives=2))
    assert chosen == {"q_loops": ["c_while", "c_yield"]} and skipped == 1


def test_mined_negatives_are_hard_and_never_the_positive_its_text_or_an_overlap(minilm):
    data = dataset(
        {
            "c_twin": TOPICS[0][1],  # the loop chunk's text again, under another id
            "c_overlap": "runs its body once for every item of a sequence such as a list or tuple",
        }
    )
    emb = embed_dataset(minilm, data, EMBED)
    mined, counts = mine(emb, data, mine_cfg(negatives=3, relative_margin=0.0), EMBED, 0, minilm)
    assert set(mined.negatives) == set(data["queries"])
    for qid, negatives in mined.negatives.items():
        positive = data["relevant_docs"][qid][0]
        texts = [data["corpus"][c] for c in negatives]
        assert positive not in negatives and data["corpus"][positive] not in texts
        assert len(negatives) == len(set(negatives)) <= 3
    assert "c_twin" not in mined.negatives["q_loops"]
    assert "c_overlap" not in mined.negatives["q_loops"]
    assert counts["skipped_overlapping"] >= 1
    # Hardest first: the base model scores them in descending order.
    q = emb.queries[emb.query_ids.index("q_while")]
    scores = [float(q @ emb.corpus[emb.corpus_ids.index(c)]) for c in mined.negatives["q_while"]]
    assert scores == sorted(scores, reverse=True)
    assert counts["negatives"] == sum(len(n) for n in mined.negatives.values())


def test_relative_margin_skips_candidates_scoring_near_the_positive(minilm):
    data = dataset()
    emb = embed_dataset(minilm, data, EMBED)

    def with_margin(margin: float):
        settings = mine_cfg(negatives=7, negative_ranks=[1, 7], relative_margin=margin)
        return mine(emb, data, settings, EMBED, 0, minilm)

    (loose, _), (strict, counts) = with_margin(0.0), with_margin(0.9)
    assert sum(map(len, strict.negatives.values())) < sum(map(len, loose.negatives.values()))
    assert counts["short_of_negatives"] > 0


# --- cross-encoder scores ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    """A one-layer BERT cross-encoder with random weights and MiniLM's tokenizer."""
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from embedtune.weights import resolve_model

    folder = tmp_path_factory.mktemp("cross")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(EMBED.model, "embed.model"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return CrossEncoder(str(folder), device="cpu")


def test_cross_encoder_scores_the_positive_and_each_negative(minilm, tiny_cross_encoder):
    data = dataset()
    emb = embed_dataset(minilm, data, EMBED)
    mined, counts = mine(emb, data, mine_cfg(negatives=2), EMBED, 0, minilm, tiny_cross_encoder)
    assert counts["cross_encoder_scored"] == len(mined.scores) == 8
    qid = "q_with"
    pairs = [(data["queries"][qid], data["corpus"][c]) for c in ["c_with", *mined.negatives[qid]]]
    expected = tiny_cross_encoder.predict(pairs)
    assert mined.scores[qid] == pytest.approx([float(s) for s in expected], abs=1e-5)


# --- the stage --------------------------------------------------------------------------------


def test_the_stage_writes_roles_negatives_and_counts(minilm, tmp_path, monkeypatch):
    import embedtune.mine.__main__ as mine_stage

    data = dataset()
    io.write_json(tmp_path / io.QA_DIR / "train.json", data)
    save_embeddings(
        tmp_path / io.EMBEDDINGS_DIR / "train.safetensors", embed_dataset(minilm, data, EMBED)
    )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["embed"] = EMBED.model_dump()
    params["mine"] = {**params["mine"], "seen_corpus_fraction": 0.25, "negatives": 2}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    mine_stage.main()
    mined = load_mined()
    counts = json.loads((tmp_path / "metrics/mine.json").read_text())
    assert isinstance(mined, Mined) and len(mined.seen_corpus) == counts["seen_corpus"] == 2
    assert counts["training"] == len(mined.negatives) == 6
    assert all(len(n) == 2 for n in mined.negatives.values())
    first = (tmp_path / MINED_FILE).read_bytes()
    mine_stage.main()
    assert (tmp_path / MINED_FILE).read_bytes() == first  # same params, same bytes
