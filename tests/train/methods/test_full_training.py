"""The `full` method's training loop (sentence-transformers' trainer): the held-out evaluator,
losses, patience, mixed precision flags and the trainer's arguments."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from embedtune.embeddings import embed_dataset, embed_texts, load_encoder
from embedtune.errors import EmbedtuneError
from embedtune.mine.mined import Mined
from embedtune.retrieval.evaluation import evaluate
from embedtune.retrieval.fusion import make_fusion
from embedtune.retrieval.lexical import BM25Index
from embedtune.retrieval.ranking import cosine_scores
from embedtune.retrieval.selection import HELDOUT_NAME, heldout_score, heldout_split
from embedtune.train.methods.adapters import AdapterModel
from embedtune.train.methods.base import TrainingInputs, TrainingLog, save_tuned
from embedtune.train.methods.full import FullModel
from embedtune.train.methods.full_training import (
    EVAL_KEY,
    heldout_evaluator,
    interpolate,
    make_loss,
    mixed_precision,
    train_full,
    training_arguments,
    weights_copy,
)
from embedtune.train.methods.linear import LinearAdapter
from tests.helpers import cfg
from tests.helpers.methods import embed_cfg, full_cfg, tiny_dataset

EMBED = embed_cfg()


def fresh_encoder():
    return load_encoder(cfg("embed"), for_training=True)


def vague_dataset() -> dict:
    """The dozen chunks with questions that barely say which one they mean: MRR@10 well below 1."""
    dataset = tiny_dataset()
    dataset["queries"] = {
        q: f"Which part of the manual is this, item {q[1:]}?" for q in dataset["queries"]
    }
    return dataset


# --- the held-out evaluator: heldout_score, the same MRR@10 as eval -------------------------


def test_heldout_evaluator_is_heldout_score_and_evals_mrr(minilm):
    dataset = vague_dataset()
    _, held = heldout_split(dataset, 0.5, 0)
    evaluator = heldout_evaluator(dataset, held, EMBED)
    assert evaluator.primary_metric == EVAL_KEY == "heldout_mrr@10"
    value = evaluator(minilm)[EVAL_KEY]
    assert 0 < value < 1
    corpus_ids = list(dataset["corpus"])
    queries = embed_texts(minilm, [dataset["queries"][q] for q in held], "query: ", 16)
    corpus = embed_texts(minilm, [dataset["corpus"][c] for c in corpus_ids], "passage: ", 16)
    assert value == heldout_score(queries, corpus, held, corpus_ids, dataset["relevant_docs"])
    # eval's mrr@10 on the held-out questions against the whole corpus: the same number.
    held_only = {**dataset, "queries": {q: dataset["queries"][q] for q in held}}
    emb = embed_dataset(minilm, held_only, EMBED)
    result = evaluate(
        emb, held_only, AdapterModel("adapter_linear", LinearAdapter(384)), {"mrr": [10]}
    )
    assert value == pytest.approx(float(result.per_query["base"]["mrr@10"].mean()), abs=1e-6)
    # Without the prefixes the texts are others, and so is the score.
    plain = heldout_evaluator(dataset, held, cfg("embed"))(minilm)[EVAL_KEY]
    assert plain != value


# --- training ------------------------------------------------------------------------------


def test_patience_stops_when_the_held_out_score_is_flat(minilm):
    # A learning rate far too small to move any ranking: the score never improves after epoch 1.
    train_cfg = full_cfg(lr=1e-12, epochs=5, patience=1)
    epochs: list[tuple[int, int, float]] = []
    dataset = vague_dataset()
    log = TrainingLog(epoch=lambda e, s, m: epochs.append((e, s, m[HELDOUT_NAME])))
    model = train_full(fresh_encoder(), TrainingInputs(dataset, EMBED), train_cfg, 3, log)
    assert [(e, s) for e, s, _ in epochs] == [(0, 0), (1, 3), (2, 6)]
    # Epoch 0 is the base model, scored with heldout_score on its embeddings of the texts.
    _, held = heldout_split(dataset, 0.25, 3)
    corpus_ids = list(dataset["corpus"])

    def score(encoder) -> float:
        queries = embed_texts(encoder, [dataset["queries"][q] for q in held], "query: ", 16)
        corpus = embed_texts(encoder, [dataset["corpus"][c] for c in corpus_ids], "passage: ", 16)
        return heldout_score(queries, corpus, held, corpus_ids, dataset["relevant_docs"])

    base = fresh_encoder()
    base.max_seq_length = 64  # train.max_seq_length applies from epoch 0 on
    assert 0 < epochs[0][2] < 1
    assert epochs[0][2] == pytest.approx(score(base), abs=1e-6)
    assert epochs[0][2] != score(minilm)  # the texts are truncated: the setting took effect
    assert epochs[2][2] == pytest.approx(score(model), abs=1e-6)
    assert model.prompts == {"query": "query: ", "document": "passage: "}
    assert not model.training


def next_chunks(dataset: dict, count: int) -> Mined:
    """Mined negatives: each question's next `count` chunks."""
    ids = list(dataset["corpus"])
    negatives = {
        q: [ids[(ids.index(dataset["relevant_docs"][q][0]) + k) % len(ids)] for k in (1, 2)][:count]
        for q in dataset["queries"]
    }
    return Mined([], {}, negatives)


def test_cached_loss_matryoshka_and_hard_negatives_train(tmp_path):
    train_cfg = full_cfg(
        "train/loss=cached_mnrl",
        holdout_fraction=0.0,
        matryoshka_dims=[384, 64],
        hard_negatives=1,
    )
    train_cfg = train_cfg.model_copy(
        update={"loss": train_cfg.loss.model_copy(update={"mini_batch_size": 2})}
    )
    steps: list[float] = []
    epochs: list[int] = []
    log = TrainingLog(lambda s, loss: steps.append(loss), lambda e, s, m: epochs.append(e))
    inputs = TrainingInputs(tiny_dataset(), EMBED, mined=next_chunks(tiny_dataset(), 1))
    model = train_full(fresh_encoder(), inputs, train_cfg, 1, log)
    assert len(steps) == 3 and all(loss > 0 for loss in steps)  # hard negatives: never zero
    assert epochs == []  # nothing held out: no selection, the last epoch is kept
    save_tuned(FullModel(model, "query: ", "passage: ", 16), tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["method"] == "full"


def test_too_few_training_pairs():
    dataset = tiny_dataset()
    dataset["relevant_docs"] = {"q0": ["c0"]}
    with pytest.raises(EmbedtuneError, match="fewer than 2 labelled queries"):
        train_full(fresh_encoder(), TrainingInputs(dataset, EMBED), full_cfg(), 0, TrainingLog())


def test_the_base_model_is_kept_when_training_does_not_beat_it_beyond_noise():
    # Too small a learning rate to move a ranking: held-out gain 0, interval [0, 0].
    train_cfg = full_cfg(lr=1e-12, epochs=1, selection_confidence=0.95)
    chosen: list[tuple] = []
    log = TrainingLog(selected=lambda best, kept, gain: chosen.append((best, kept, gain)))
    assert (
        train_full(fresh_encoder(), TrainingInputs(vague_dataset(), EMBED), train_cfg, 3, log)
        is None
    )
    assert chosen == [(1, 0, {"diff": 0.0, "low": 0.0, "high": 0.0})]


def test_margin_mse_distils_scores_of_the_mined_negatives():
    dataset = tiny_dataset()
    mined = next_chunks(dataset, 2)
    mined.scores = {q: [3.0, 1.0, -1.0] for q in list(dataset["queries"])[:8]}
    train_cfg = full_cfg("train/loss=margin_mse", holdout_fraction=0.0, hard_negatives=2)
    steps: list[float] = []
    model = train_full(
        fresh_encoder(),
        TrainingInputs(dataset, EMBED, mined=mined),
        train_cfg,
        0,
        TrainingLog(lambda s, loss: steps.append(loss)),
    )
    assert len(steps) == 2 and all(loss > 0 for loss in steps)  # 8 scored questions, batch 4
    assert model is not None
    without = TrainingInputs(dataset, EMBED, mined=next_chunks(dataset, 2))
    with pytest.raises(EmbedtuneError, match="needs|learns from scored hard negatives"):
        train_full(fresh_encoder(), without, train_cfg, 0, TrainingLog())


# --- losses, precision, arguments ----------------------------------------------------------


def test_make_loss(minilm):
    from sentence_transformers.sentence_transformer import losses

    plain = make_loss(minilm, full_cfg())
    assert type(plain) is losses.MultipleNegativesRankingLoss and plain.scale == 20.0
    nested = make_loss(minilm, full_cfg(matryoshka_dims=[384, 128]))
    assert isinstance(nested, losses.MatryoshkaLoss)
    assert list(nested.matryoshka_dims) == [384, 128]
    assert type(nested.loss) is losses.MultipleNegativesRankingLoss


def test_matryoshka_dims_larger_than_the_model(minilm):
    with pytest.raises(EmbedtuneError, match=r"matryoshka_dims \[512, 128\] exceed.*384"):
        make_loss(minilm, full_cfg(matryoshka_dims=[512, 128]))


@pytest.mark.parametrize(
    ("dtype", "device", "flags"),
    [
        ("bfloat16", "cpu", {}),
        ("float16", "cpu", {}),
        ("bfloat16", "cuda", {"bf16": True, "fp16": False}),
        ("float16", "cuda", {"bf16": False, "fp16": True}),
        ("float32", "cuda", {"bf16": False, "fp16": False}),
    ],
)
def test_mixed_precision(dtype, device, flags):
    assert mixed_precision(cfg("embed", dtype=dtype), device) == flags


@pytest.mark.parametrize("held", [True, False])
def test_training_arguments(tmp_path, held):
    train_cfg = full_cfg(epochs=2, patience=0)
    args = training_arguments(train_cfg, EMBED, 5, str(tmp_path), "cpu", held)
    assert (args.num_train_epochs, args.per_device_train_batch_size) == (2, 4)
    assert (args.learning_rate, args.weight_decay, args.seed, args.data_seed) == (1e-4, 0.01, 5, 5)
    assert args.warmup_steps == 0.1  # transformers 5: below 1, a fraction of the steps
    assert args.per_device_eval_batch_size == 16
    assert args.batch_sampler == "no_duplicates"
    assert args.eval_strategy == args.save_strategy == ("epoch" if held else "no")
    assert args.load_best_model_at_end is held
    assert args.metric_for_best_model == (EVAL_KEY if held else None)
    assert args.greater_is_better and args.save_only_model
    assert args.use_cpu and args.report_to == [] and args.disable_tqdm
    assert not args.bf16 and not args.fp16


# --- WiSE-FT: the fine-tune moved back towards the base weights ------------------------------


def test_interpolate_is_base_plus_alpha_times_the_change():
    model = torch.nn.Linear(3, 2)
    base = weights_copy(model)
    with torch.no_grad():
        model.weight.add_(1.0)
        model.bias.mul_(3.0)
    tuned = weights_copy(model)
    interpolate(model, base, 0.25)
    for name, value in model.state_dict().items():
        assert torch.allclose(value, base[name] + 0.25 * (tuned[name] - base[name]))
    assert base["weight"].data_ptr() != model.weight.data_ptr()  # a copy, not a view


def test_wise_ft_ships_the_interpolated_weights_and_judges_them():
    dataset = tiny_dataset()
    chosen: list[tuple] = []
    log = TrainingLog(selected=lambda best, kept, gain: chosen.append((best, kept, gain)))
    base = weights_copy(fresh_encoder())
    cfg_full = full_cfg(epochs=1, selection_confidence=None)
    tuned = weights_copy(
        train_full(fresh_encoder(), TrainingInputs(dataset, EMBED), cfg_full, 0, log)
    )
    half = full_cfg(epochs=1, selection_confidence=None, wise_ft=0.5)
    mixed = train_full(fresh_encoder(), TrainingInputs(dataset, EMBED), half, 0, log)
    for name, value in mixed.state_dict().items():
        if name in base and not torch.equal(base[name], tuned[name]):
            assert torch.allclose(value, (base[name] + tuned[name]) / 2, atol=1e-6), name
    assert [kept for _, kept, _ in chosen] == [1, 1]  # selection_confidence None: always kept


def test_fusion_margin_mse_distils_the_fused_scores_of_the_mined_negatives(minilm):
    dataset = tiny_dataset()
    emb = embed_dataset(minilm, dataset, EMBED)
    inputs = TrainingInputs(dataset, EMBED, mined=next_chunks(dataset, 2), _embeddings=emb)
    train_cfg = full_cfg("train/loss=fusion_margin_mse", holdout_fraction=0.0, hard_negatives=2)
    loss = train_cfg.loss
    scores = loss.teacher_scores(inputs)
    assert set(scores) == set(dataset["queries"]) and all(len(s) == 3 for s in scores.values())
    # the teacher is the `retrieve.fusion` convex candidate of the base cosine and BM25
    convex = make_fusion("convex", {"dense_weight": loss.dense_weight}, 0)
    index = BM25Index.build(list(dataset["corpus"].values()), loss.bm25)
    fused = convex.fuse(
        cosine_scores(emb.queries, emb.corpus), index.scores(list(dataset["queries"].values()))
    )
    q5 = list(dataset["queries"]).index("q5")
    assert scores["q5"] == pytest.approx([float(fused[q5, c]) for c in (5, 6, 7)], abs=1e-6)
    steps: list[float] = []
    model = train_full(
        fresh_encoder(), inputs, train_cfg, 0, TrainingLog(lambda s, x: steps.append(x))
    )
    assert model is not None and len(steps) == 3 and all(x > 0 for x in steps)


def test_fusion_teacher_scores_are_the_same_in_the_ranking_blocks_of_queries(minilm, monkeypatch):
    from embedtune.retrieval import ranking

    dataset = tiny_dataset()
    emb = embed_dataset(minilm, dataset, EMBED)
    inputs = TrainingInputs(dataset, EMBED, mined=next_chunks(dataset, 2), _embeddings=emb)
    loss = full_cfg("train/loss=fusion_margin_mse", hard_negatives=2).loss
    whole = loss.teacher_scores(inputs)  # a dozen questions: one block
    chunks = len(emb.corpus_ids)
    monkeypatch.setattr(ranking, "SCORE_BLOCK_BYTES", 8 * chunks * 5)  # 5 questions a block
    monkeypatch.setattr(ranking, "_MIN_QUERIES_PER_BLOCK", 1)
    assert ranking.queries_per_block(chunks) == 5
    assert loss.teacher_scores(inputs) == whole


def test_a_diverging_loss_stops_training_naming_train_lr_and_leaves_no_checkpoints(
    tmp_path, monkeypatch
):
    # A checkpoint folder a killed run left (its process is gone), and this run's own: both go.
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    left = tmp_path / f"embedtune-checkpoints-{dead.stdout.strip()}-abcd_123"
    (left / "checkpoint-3").mkdir(parents=True)
    losses: list[float] = []
    log = TrainingLog(lambda step, loss: losses.append(loss))
    train_cfg = full_cfg(lr=1e30, epochs=2, holdout_fraction=0.0)
    # The whole message: test_adapter_training.py; here, that it is the divergence naming lr.
    with pytest.raises(EmbedtuneError, match=r"^training diverged .*train\.lr=1e\+30"):
        train_full(fresh_encoder(), TrainingInputs(tiny_dataset(), EMBED), train_cfg, 0, log)
    assert all(math.isfinite(loss) for loss in losses)  # the diverged step is not logged
    assert not list(tmp_path.glob("embedtune-checkpoints-*"))  # (torch keeps caches there too)
