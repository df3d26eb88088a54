"""The `full` method's training: sentence-transformers' `SentenceTransformerTrainer` on the
question and chunk texts (no-duplicates batches, the configured loss, optional Matryoshka
dimensions and mined hard negatives), with the epoch picked on held-out training questions
by the same MRR@10 that `eval` reports."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from embedtune.config import EmbedConfig
from embedtune.embeddings import embed_texts
from embedtune.errors import EmbedtuneError
from embedtune.retrieval.selection import (
    HELDOUT_NAME,
    heldout_per_query,
    select_epoch,
)
from embedtune.train import distributed
from embedtune.train.losses import build_loss
from embedtune.train.methods.base import TrainingInputs, TrainingLog, check_loss
from embedtune.train.methods.checkpoints import checkpoint_space
from embedtune.train.methods.full_data import training_columns
from embedtune.weights import encoder_dtype

EVAL_KEY = f"heldout_{HELDOUT_NAME}"  # the trainer logs it as eval_heldout_mrr@10


def heldout_evaluator(dataset: dict, held_ids: Sequence[str], embed: EmbedConfig):
    """A sentence-transformers evaluator: held-out questions against the training corpus.
    `per_query(model)` gives each question's MRR@10, the evaluator call their mean."""
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

    corpus_ids = list(dataset["corpus"])
    queries = [dataset["queries"][q] for q in held_ids]
    corpus = [dataset["corpus"][c] for c in corpus_ids]

    class HeldoutEvaluator(SentenceEvaluator):
        def __init__(self):
            super().__init__()
            self.primary_metric = EVAL_KEY

        def per_query(self, model) -> np.ndarray:
            q = embed_texts(model, queries, embed.query_prefix, embed.batch_size)
            c = embed_texts(model, corpus, embed.document_prefix, embed.batch_size)
            return heldout_per_query(q, c, held_ids, corpus_ids, dataset["relevant_docs"])

        def __call__(self, model, output_path=None, epoch=-1, steps=-1) -> dict[str, float]:
            values = self.per_query(model)
            return {EVAL_KEY: float(values.mean()) if len(values) else 0.0}

    return HeldoutEvaluator()


def mixed_precision(embed: EmbedConfig, device: str) -> dict[str, bool]:
    """Trainer flags for `embed.dtype` on CUDA: weights stay float32, the math runs in half
    precision. On a CPU training is float32 whatever the dtype."""
    if device != "cuda":
        return {}
    dtype = encoder_dtype(embed.dtype, device)
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def make_loss(model, cfg):
    from sentence_transformers.sentence_transformer import losses

    loss = build_loss(model, cfg.loss)
    if cfg.matryoshka_dims:
        dim = model.get_embedding_dimension()
        if max(cfg.matryoshka_dims) > dim:
            raise EmbedtuneError(
                f"train.matryoshka_dims {cfg.matryoshka_dims} exceed the model's {dim} dimensions"
            )
        loss = losses.MatryoshkaLoss(model, loss, matryoshka_dims=cfg.matryoshka_dims)
    return loss


def training_arguments(cfg, embed: EmbedConfig, seed: int, folder: str, device: str, held: bool):
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )

    return SentenceTransformerTrainingArguments(
        output_dir=folder,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=embed.batch_size,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a value below 1 is a fraction
        optim="adamw_torch",
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        seed=seed,
        data_seed=seed,
        eval_strategy="epoch" if held else "no",
        save_strategy="epoch" if held else "no",
        load_best_model_at_end=held,
        metric_for_best_model=EVAL_KEY if held else None,
        greater_is_better=True,
        save_total_limit=1,
        save_only_model=True,
        logging_strategy="steps",
        logging_steps=1,
        logging_nan_inf_filter=False,  # a diverged step must show, not be averaged away
        report_to="none",
        disable_tqdm=True,
        use_cpu=device == "cpu",
        save_on_each_node=True,  # across machines, each loads the best epoch from its own disk
        **mixed_precision(embed, device),
    )


def callbacks(log: TrainingLog, cfg, held: bool) -> list:
    """Our logging (a non-finite loss stops training) and, with held-out questions and
    `train.patience`, early stopping."""
    from transformers import EarlyStoppingCallback, TrainerCallback

    class Log(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                check_loss(float(logs["loss"]), state.global_step, cfg)
                log.step(state.global_step, float(logs["loss"]))

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            value = (metrics or {}).get(f"eval_{EVAL_KEY}")
            if value is not None:
                log.epoch(round(state.epoch), state.global_step, {HELDOUT_NAME: value})

    found = [Log()]
    if held and cfg.patience:
        found.append(EarlyStoppingCallback(early_stopping_patience=cfg.patience))
    return found


@dataclass
class Selection:
    """The untrained model's held-out values and the best trained epoch (the trainer's pick)."""

    untrained: np.ndarray | None = None
    best_epoch: int = 0
    best: float = field(default=float("-inf"))

    def saw(self, epoch: int, value: float) -> None:
        if epoch > 0 and value > self.best:
            self.best_epoch, self.best = epoch, value


def train_full(model, inputs: TrainingInputs, cfg, seed: int, log: TrainingLog):
    """Fine-tune every weight of `model` (a loaded `SentenceTransformer`) on the training texts.

    Args:
        model: the base model, on the device to train on; it is trained in place.
        inputs: the training split (texts), its question roles and mined negatives, `embed`
            (`query_prefix` and `document_prefix` prepended to every text, `batch_size`).
        cfg: the `full` method's config.
        seed: seeds negatives padding, batches, dropout and the selection's bootstrap.
        log: receives the loss per step, the held-out MRR@10 of the base model (epoch 0) and
            after every epoch, and the selection.

    Returns:
        The model with the best held-out epoch's weights (moved back towards the base model's
        by `train.wise_ft`) when they beat the base model beyond the held-out slice's noise
        (else None: keep the base model); the last epoch's when nothing is held out. Its
        `prompts` are the embed prefixes. Trainer checkpoints go to a temporary folder that is
        removed (by the next run when this one is killed: `checkpoint_space`).
    """
    dataset, embed = inputs.dataset, inputs.embed
    train_ids, held_ids = inputs.question_split(cfg, seed)
    if sum(len(dataset["relevant_docs"][q]) for q in train_ids) < 2:
        raise EmbedtuneError(
            "training split has fewer than 2 labelled queries outside the held-out slice "
            "(more documents in data.train, a smaller train.holdout_fraction, "
            "or check metrics/mine.json)"
        )
    # The texts carry the prefixes; a prompt the base model ships would be added twice.
    model.prompts, model.default_prompt_name = {}, None
    if cfg.max_seq_length is not None:
        model.max_seq_length = cfg.max_seq_length
    scores = cfg.loss.teacher_scores(inputs) if cfg.loss.needs_scores else None
    if cfg.loss.needs_scores and not (scores and cfg.hard_negatives):
        raise EmbedtuneError(
            f"train.loss={cfg.loss.name} learns from scored hard negatives: set "
            "train.hard_negatives > 0 (and mine.cross_encoder for margin_mse)"
        )
    columns = training_columns(
        dataset, train_ids, inputs.negatives, cfg.hard_negatives, embed, seed, scores
    )
    evaluator = heldout_evaluator(dataset, held_ids, embed) if held_ids else None
    selection = Selection()
    if evaluator is not None:
        selection.untrained = evaluator.per_query(model)
        log.epoch(0, 0, {HELDOUT_NAME: float(selection.untrained.mean())})
    base_weights = weights_copy(model) if cfg.wise_ft < 1 else None
    model = fit(model, columns, cfg, embed, seed, log, evaluator, selection.saw)
    if base_weights is not None:
        interpolate(model, base_weights, cfg.wise_ft)
    if evaluator is not None:
        # the best epoch (the trainer loaded it back), as interpolated: the model shipped
        best = evaluator.per_query(model)
        if not select_epoch(selection.untrained, selection.best_epoch, best, cfg, seed, log):
            return None
    model.prompts = {"query": embed.query_prefix, "document": embed.document_prefix}
    model.default_prompt_name = None
    return model.eval()


def weights_copy(model) -> dict[str, torch.Tensor]:
    """A detached copy of the floating-point weights, on the CPU."""
    return {
        name: value.detach().to("cpu", copy=True)
        for name, value in model.state_dict().items()
        if value.is_floating_point()
    }


@torch.no_grad()
def interpolate(model, base: dict[str, torch.Tensor], alpha: float) -> None:
    """WiSE-FT (arXiv 2109.01903): every weight becomes base + alpha * (tuned - base), in place."""
    for name, value in model.state_dict().items():
        if name in base:
            start = base[name].to(value.device, value.dtype)
            value.copy_(start + alpha * (value - start))


def fit(model, columns, cfg, embed, seed, log, evaluator, saw: Callable[[int, float], None]):
    """Run the sentence-transformers trainer; the best held-out epoch's weights come back."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import PrinterCallback

    class _Trainer(SentenceTransformerTrainer):
        def add_model_card_callback(self, default_args_dict) -> None:
            pass  # no model card is written, so no widget examples to compute

    held = evaluator is not None

    def on_epoch(epoch: int, step: int, metrics: dict[str, float]) -> None:
        saw(epoch, metrics[HELDOUT_NAME])
        log.epoch(epoch, step, metrics)

    with checkpoint_space() as temporary:
        checkpoints = distributed.checkpoint_folder(temporary)
        trainer = _Trainer(
            model=model,
            args=training_arguments(cfg, embed, seed, str(checkpoints), model.device.type, held),
            train_dataset=Dataset.from_dict(columns),
            loss=make_loss(model, cfg),
            evaluator=evaluator,
            callbacks=callbacks(TrainingLog(log.step, on_epoch), cfg, held),
        )
        trainer.remove_callback(PrinterCallback)  # our callbacks report; no dicts on stdout
        trainer.train()
        trainer.accelerator.wait_for_everyone()  # every process has loaded the best epoch
        if trainer.is_local_process_zero():
            shutil.rmtree(checkpoints, ignore_errors=True)
        return trainer.model
