"""Stage `train`: tune the base model on the training questions, the way `train.method` says.

Usage: python -m embedtune.train   (reads params.yaml; run by `dvc repro`)

- `adapter_linear`, `adapter_2layer`: a small network on the cached query embeddings (documents
  keep their base embeddings, so an existing index need not be rebuilt), with the parameter names
  of LlamaIndex's `LinearLayer` and `TwoLayerNN`, so its `AdapterEmbeddingModel` can load them.
  Loss: multiple negatives ranking over the other chunks of a batch; no chunk is twice in a batch.
- `full`: every weight of the base model, with sentence-transformers' `SentenceTransformerTrainer`
  on the question and chunk texts (multiple negatives ranking loss, no-duplicates batches,
  optional Matryoshka dimensions and mined hard negatives).

The questions of `train.holdout_fraction` of the training chunks are held out; after every epoch
their MRR@10 against the whole training corpus picks the epoch whose weights are kept, and
`train.patience` stops early. The validation split is never read here.
Writes models/tuned/ (safetensors and config.json, whose "method" says which kind) and
metrics/train/ (loss per step, held-out MRR@10 per epoch).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from embedtune import io
from embedtune.config import EmbedConfig, TrainConfig, load_params
from embedtune.embed import SplitEmbeddings, embed_texts, load_dataset, load_embeddings
from embedtune.errors import EmbedtuneError, run_stage
from embedtune.models import encoder_dtype

HELDOUT_K = 10  # model selection metric: MRR@10 of the held-out questions
StepLog = Callable[[int, float], None]  # (optimiser step, loss)
EpochLog = Callable[[int, int, dict[str, float]], None]  # (epoch, steps so far, held-out metrics)


def _no_step(step: int, loss: float) -> None:
    pass


def _no_epoch(epoch: int, step: int, metrics: dict[str, float]) -> None:
    pass


# --- adapters -------------------------------------------------------------------------------


class LinearAdapter(nn.Module):
    """`W q + b`, started at the identity so the untrained adapter is the base model.

    Parameter names match LlamaIndex's `LinearLayer`, so its `AdapterEmbeddingModel` can load them.
    """

    def __init__(self, dim: int, bias: bool = True):
        super().__init__()
        self.in_features = self.out_features = dim
        self.bias = bias
        self.linear = nn.Linear(dim, dim, bias=bias)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(dim))
            if bias:
                self.linear.bias.zero_()

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.linear(embeddings)

    def config(self) -> dict:
        return {
            "method": "adapter_linear",
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias,
        }


class TwoLayerAdapter(nn.Module):
    """`q + a * (W2 relu(W1 q + b1) + b2)` with a learned scalar `a` that starts at 0.

    Parameters and their names are those of LlamaIndex's `TwoLayerNN` (`linear1`, `linear2`,
    `residual_weight`), so the untrained residual adapter is the base model. LlamaIndex always
    keeps both biases; with `bias=False` ours are there too, but zero and frozen. Without
    `residual` the output is the MLP alone (`residual_weight` is kept, unused, for the names).
    """

    def __init__(self, dim: int, hidden_size: int, bias: bool = True, residual: bool = True):
        super().__init__()
        self.in_features = self.out_features = dim
        self.hidden_features = hidden_size
        self.bias = bias
        self.add_residual = residual
        self.linear1 = nn.Linear(dim, hidden_size, bias=True)
        self.linear2 = nn.Linear(hidden_size, dim, bias=True)
        self.residual_weight = nn.Parameter(torch.zeros(1), requires_grad=residual)
        if not bias:
            for layer in (self.linear1, self.linear2):
                nn.init.zeros_(layer.bias)
                layer.bias.requires_grad_(False)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        out = self.linear2(F.relu(self.linear1(embeddings)))
        if self.add_residual:
            out = self.residual_weight * out + embeddings
        return out

    def config(self) -> dict:
        return {
            "method": "adapter_2layer",
            "in_features": self.in_features,
            "hidden_features": self.hidden_features,
            "out_features": self.out_features,
            "bias": self.bias,
            "activation_fn_str": "relu",
            "add_residual": self.add_residual,
        }


def make_adapter(cfg: TrainConfig, dim: int) -> nn.Module:
    if cfg.method == "adapter_2layer":
        return TwoLayerAdapter(dim, cfg.hidden_size, bias=cfg.bias, residual=cfg.residual)
    return LinearAdapter(dim, bias=cfg.bias)


# --- held-out slice of the training split ---------------------------------------------------


def holdout_chunks(chunk_ids: Iterable[str], fraction: float, seed: int) -> set[str]:
    """The `fraction` of the chunks (rounded) whose seeded hash of the id is smallest."""
    ids = sorted(set(chunk_ids))
    count = math.floor(fraction * len(ids) + 0.5)

    def key(cid: str) -> str:
        return hashlib.sha256(f"{seed}\0{cid}".encode()).hexdigest()

    return set(sorted(ids, key=key)[:count])


def split_queries(
    query_ids: Iterable[str], relevant: dict[str, list[str]], heldout: Collection[str]
) -> tuple[list[str], list[str]]:
    """(training, held-out) labelled query ids; a query of any held-out chunk is held out."""
    train, held = [], []
    for qid in query_ids:
        chunks = relevant.get(qid, [])
        if chunks:
            (held if any(c in heldout for c in chunks) else train).append(qid)
    return train, held


def heldout_split(dataset: dict, cfg: TrainConfig, seed: int) -> tuple[list[str], list[str]]:
    """(training, held-out) query ids of a split, in the order of `dataset["queries"]`."""
    relevant = dataset["relevant_docs"]
    with_questions = {c for qid in dataset["queries"] for c in relevant.get(qid, [])}
    heldout = holdout_chunks(with_questions, cfg.holdout_fraction, seed)
    return split_queries(dataset["queries"], relevant, heldout)


def gold_mask(
    query_ids: Sequence[str], corpus_ids: Sequence[str], relevant: dict[str, list[str]]
) -> torch.Tensor:
    """Boolean [queries, chunks]: True where the chunk is relevant to the query."""
    col = {cid: i for i, cid in enumerate(corpus_ids)}
    gold = torch.zeros(len(query_ids), len(corpus_ids), dtype=torch.bool)
    for qi, qid in enumerate(query_ids):
        for cid in relevant.get(qid, []):
            if cid in col:
                gold[qi, col[cid]] = True
    return gold


def mrr_at_k(queries: torch.Tensor, corpus: torch.Tensor, gold: torch.Tensor, k: int) -> float:
    """Mean reciprocal rank of the best-ranked relevant chunk (cosine), zero beyond rank k."""
    scores = F.normalize(queries, dim=-1) @ F.normalize(corpus, dim=-1).T
    best_gold = scores.masked_fill(~gold, float("-inf")).max(dim=1).values
    ranks = (scores > best_gold.unsqueeze(1)).sum(dim=1) + 1
    reciprocal = torch.where(ranks <= k, 1.0 / ranks.double(), torch.zeros((), dtype=torch.float64))
    return reciprocal.mean().item()


# --- adapter training -----------------------------------------------------------------------


def training_pairs(
    emb: SplitEmbeddings, dataset: dict, query_ids: Collection[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (query, positive chunk) for every labelled query of the split (or of
    `query_ids` only)."""
    corpus_row = {cid: i for i, cid in enumerate(emb.corpus_ids)}
    keep = None if query_ids is None else set(query_ids)
    q_rows, d_rows = [], []
    for qi, qid in enumerate(emb.query_ids):
        if keep is not None and qid not in keep:
            continue
        for cid in dataset["relevant_docs"].get(qid, []):
            q_rows.append(qi)
            d_rows.append(corpus_row[cid])
    return torch.tensor(q_rows, dtype=torch.long), torch.tensor(d_rows, dtype=torch.long)


def no_duplicate_batches(
    doc_rows: torch.Tensor, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Shuffled batches of positions into `doc_rows`, no chunk twice in a batch, each position once.

    Uses B = max(ceil(n / batch_size), most questions of one chunk) batches: the positions are
    grouped by chunk (chunks in random order, questions shuffled within a chunk) and dealt out in
    turn, position i to batch i mod B. A chunk's questions are consecutive and at most B, so they
    land in different batches; batch sizes differ by at most one and never exceed `batch_size`.
    """
    n = len(doc_rows)
    if n == 0:
        return []
    chunks, counts = torch.unique(doc_rows, return_counts=True)
    num_batches = max(math.ceil(n / batch_size), int(counts.max()))
    by_chunk = {int(c): (doc_rows == c).nonzero().flatten() for c in chunks}
    sequence = []
    for ci in torch.randperm(len(chunks), generator=generator).tolist():
        positions = by_chunk[int(chunks[ci])]
        sequence.append(positions[torch.randperm(len(positions), generator=generator)])
    dealt = torch.cat(sequence)
    batches = [dealt[j::num_batches] for j in range(num_batches)]
    order = torch.randperm(num_batches, generator=generator).tolist()
    return [batches[j][torch.randperm(len(batches[j]), generator=generator)] for j in order]


def ranking_loss(
    adapter: nn.Module,
    queries: torch.Tensor,
    corpus: torch.Tensor,
    doc_rows: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Cross-entropy of each query's positive against the batch's other distinct chunks."""
    candidates, target = torch.unique(doc_rows, return_inverse=True)
    q = F.normalize(adapter(queries), dim=-1)
    scores = scale * q @ corpus[candidates].T
    return F.cross_entropy(scores, target)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_adapter(
    emb: SplitEmbeddings,
    dataset: dict,
    cfg: TrainConfig,
    seed: int,
    log_step: StepLog = _no_step,
    log_epoch: EpochLog = _no_epoch,
) -> nn.Module:
    """Train the adapter of `cfg.method` on cached embeddings; keep the best held-out epoch.

    Args:
        emb: base-model embeddings of the training split.
        dataset: the split's `EmbeddingQAFinetuneDataset` dict (for `relevant_docs`).
        cfg: adapter shape, optimiser, epochs, batch size, loss scale, held-out fraction, patience.
        seed: seeds initialisation, the held-out slice and the batches.
        log_step: called with (step, loss) after every optimiser step.
        log_epoch: called with (epoch, step, {"mrr@10": value}) for the untrained adapter
            (epoch 0) and after every epoch, when there are held-out questions.

    Returns:
        The adapter with the weights of the best epoch (epoch 0, the untrained one, included);
        the last epoch's when nothing is held out.
    """
    relevant = dataset["relevant_docs"]
    train_ids, held_ids = heldout_split(dataset, cfg, seed)
    q_rows, d_rows = training_pairs(emb, dataset, train_ids)
    if len(q_rows) < 2:
        raise EmbedtuneError(
            f"training split has {len(q_rows)} labelled queries, need at least 2 "
            "(more documents in data.train, a smaller train.holdout_fraction, "
            "or check metrics/synth.json)"
        )
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    adapter = make_adapter(cfg, emb.queries.shape[1])
    optimizer = make_optimizer(adapter.parameters(), cfg)

    row = {qid: i for i, qid in enumerate(emb.query_ids)}
    held_queries = emb.queries[[row[q] for q in held_ids]]
    held_gold = gold_mask(held_ids, emb.corpus_ids, relevant)

    def held_out_score() -> float:
        with torch.no_grad():
            return mrr_at_k(adapter(held_queries), emb.corpus, held_gold, HELDOUT_K)

    step, stale = 0, 0
    best_state, best = None, float("-inf")
    if held_ids:
        best = held_out_score()
        best_state = {k: v.detach().clone() for k, v in adapter.state_dict().items()}
        log_epoch(0, 0, {f"mrr@{HELDOUT_K}": best})
    for epoch in range(1, cfg.epochs + 1):
        for batch in no_duplicate_batches(d_rows, cfg.batch_size, generator):
            if len(batch) < 2:
                continue  # one chunk alone has no negative to rank against
            loss = ranking_loss(
                adapter, emb.queries[q_rows[batch]], emb.corpus, d_rows[batch], cfg.scale
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            log_step(step, loss.item())
        if not held_ids:
            continue
        score = held_out_score()
        log_epoch(epoch, step, {f"mrr@{HELDOUT_K}": score})
        if score > best:
            best, stale = score, 0
            best_state = {k: v.detach().clone() for k, v in adapter.state_dict().items()}
        else:
            stale += 1
            if cfg.patience and stale >= cfg.patience:
                break
    if best_state is not None:
        adapter.load_state_dict(best_state)
    return adapter.eval()


# --- full fine-tune -------------------------------------------------------------------------


def rank_window_negatives(
    scores: torch.Tensor,
    gold: torch.Tensor,
    ranks: Sequence[int],
    count: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """For each query, `count` chunks drawn at random from ranks [first, last] of the non-gold ones.

    Args:
        scores: [queries, chunks] base-model similarities.
        gold: [queries, chunks] True for the query's own (relevant) chunks: never a negative.
        ranks: [first, last], 1-based, counted among the non-gold chunks by descending score.
        count: negatives per query.
        generator: seeds the draw.

    Returns:
        [queries, count] chunk indices, in descending score order.
    """
    first, last = ranks
    order = scores.masked_fill(gold, float("-inf")).argsort(dim=1, descending=True, stable=True)
    available = (~gold).sum(dim=1)
    picked = []
    for qi in range(len(scores)):
        window = order[qi, first - 1 : min(last, int(available[qi]))]
        if len(window) < count:
            raise EmbedtuneError(
                f"train.hard_negatives={count}, but a question has only {len(window)} other "
                f"chunks in ranks {first}..{last} of the training corpus: lower "
                "train.hard_negatives or train.hard_negative_ranks"
            )
        chosen = torch.randperm(len(window), generator=generator)[:count].sort().values
        picked.append(window[chosen])
    return torch.stack(picked) if picked else torch.zeros(0, count, dtype=torch.long)


def full_training_columns(
    model,
    dataset: dict,
    train_ids: Sequence[str],
    held_chunks: Collection[str],
    cfg: TrainConfig,
    embed: EmbedConfig,
    seed: int,
) -> dict[str, list[str]]:
    """Columns anchor, positive[, negative_1..n] of prefixed texts, one row per (question, chunk).

    Hard negatives are mined with `model` (the base model, before training) among the training
    chunks that are not held out; a question's own chunks, and chunks with the same text, never
    are its negatives.
    """
    relevant, corpus, queries = dataset["relevant_docs"], dataset["corpus"], dataset["queries"]
    pairs = [(qid, cid) for qid in train_ids for cid in relevant[qid]]
    columns = {
        "anchor": [embed.query_prefix + queries[qid] for qid, _ in pairs],
        "positive": [embed.document_prefix + corpus[cid] for _, cid in pairs],
    }
    if cfg.hard_negatives == 0:
        return columns
    texts = list(dict.fromkeys(corpus[c] for c in corpus if c not in held_chunks))
    text_col = {t: i for i, t in enumerate(texts)}
    gold = torch.zeros(len(train_ids), len(texts), dtype=torch.bool)
    for qi, qid in enumerate(train_ids):
        for cid in relevant[qid]:
            if corpus[cid] in text_col:
                gold[qi, text_col[corpus[cid]]] = True
    question_texts = [queries[q] for q in train_ids]
    q_emb = embed_texts(model, question_texts, embed.query_prefix, embed.batch_size)
    d_emb = embed_texts(model, texts, embed.document_prefix, embed.batch_size)
    negatives = rank_window_negatives(
        q_emb @ d_emb.T,
        gold,
        cfg.hard_negative_ranks,
        cfg.hard_negatives,
        torch.Generator().manual_seed(seed),
    )
    query_row = {qid: i for i, qid in enumerate(train_ids)}
    for n in range(cfg.hard_negatives):
        columns[f"negative_{n + 1}"] = [
            embed.document_prefix + texts[negatives[query_row[qid], n]] for qid, _ in pairs
        ]
    return columns


def make_full_loss(model, cfg: TrainConfig):
    from sentence_transformers.sentence_transformer import losses

    if cfg.loss == "cached_mnrl":
        loss = losses.CachedMultipleNegativesRankingLoss(
            model, scale=cfg.scale, mini_batch_size=cfg.mini_batch_size
        )
    else:
        loss = losses.MultipleNegativesRankingLoss(model, scale=cfg.scale)
    if cfg.matryoshka_dims:
        dim = model.get_embedding_dimension()
        if max(cfg.matryoshka_dims) > dim:
            raise EmbedtuneError(
                f"train.matryoshka_dims {cfg.matryoshka_dims} exceed the model's {dim} dimensions"
            )
        loss = losses.MatryoshkaLoss(model, loss, matryoshka_dims=cfg.matryoshka_dims)
    return loss


HELDOUT_METRIC = f"heldout_cosine_mrr@{HELDOUT_K}"  # the evaluator's name for held-out MRR@10


def heldout_evaluator(dataset: dict, held_ids: Sequence[str], embed: EmbedConfig):
    """Held-out questions against the whole training corpus, as sentence-transformers scores it."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    k = [HELDOUT_K]
    return InformationRetrievalEvaluator(
        queries={q: embed.query_prefix + dataset["queries"][q] for q in held_ids},
        corpus={c: embed.document_prefix + t for c, t in dataset["corpus"].items()},
        relevant_docs={q: set(dataset["relevant_docs"][q]) for q in held_ids},
        mrr_at_k=k,
        ndcg_at_k=k,
        accuracy_at_k=k,
        precision_recall_at_k=k,
        map_at_k=k,
        batch_size=embed.batch_size,
        name="heldout",
        write_csv=False,
        score_functions={"cosine": cos_sim},
        main_score_function="cosine",
    )


def mixed_precision(embed: EmbedConfig, device: str) -> dict[str, bool]:
    """Trainer flags for `embed.dtype` on CUDA: weights stay float32, the math runs in half
    precision. On a CPU training is float32 whatever the dtype."""
    if device != "cuda":
        return {}
    dtype = encoder_dtype(embed.dtype, device)
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def train_full(
    model,
    dataset: dict,
    cfg: TrainConfig,
    embed: EmbedConfig,
    seed: int,
    log_step: StepLog = _no_step,
    log_epoch: EpochLog = _no_epoch,
):
    """Fine-tune every weight of `model` (a loaded `SentenceTransformer`) on the training texts.

    Args:
        model: the base model, on the device to train on; it is trained in place.
        dataset: the training split's `EmbeddingQAFinetuneDataset` dict (texts).
        cfg: loss, scale, batch size, epochs, learning rate, warm-up, Matryoshka dimensions,
            hard negatives, maximum sequence length, held-out fraction, patience.
        embed: `query_prefix` and `document_prefix` (prepended to every text), `batch_size`.
        seed: seeds the held-out slice, hard negatives, batches, dropout.
        log_step: called with (step, loss) after every optimiser step.
        log_epoch: called with (epoch, step, {"mrr@10": value}) for the base model (epoch 0,
            for reference: it is not a candidate) and after every epoch.

    Returns:
        The model with the best held-out epoch's weights (the last epoch's when nothing is held
        out); its `prompts` are the embed prefixes, so `encode_query`/`encode_document` add them.
        Trainer checkpoints go to a temporary folder that is removed.
    """
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )
    from transformers import EarlyStoppingCallback, PrinterCallback, TrainerCallback

    relevant = dataset["relevant_docs"]
    train_ids, held_ids = heldout_split(dataset, cfg, seed)
    held_chunks = {c for q in held_ids for c in relevant[q]}
    if sum(len(relevant[q]) for q in train_ids) < 2:
        raise EmbedtuneError(
            "training split has fewer than 2 labelled queries outside the held-out slice "
            "(more documents in data.train, or a smaller train.holdout_fraction)"
        )
    # The texts carry the prefixes; a prompt the base model ships would be added twice.
    model.prompts, model.default_prompt_name = {}, None
    if cfg.max_seq_length is not None:
        model.max_seq_length = cfg.max_seq_length
    columns = full_training_columns(model, dataset, train_ids, held_chunks, cfg, embed, seed)
    evaluator = heldout_evaluator(dataset, held_ids, embed) if held_ids else None
    if evaluator is not None:
        log_epoch(0, 0, {f"mrr@{HELDOUT_K}": evaluator(model)[HELDOUT_METRIC]})

    class _Trainer(SentenceTransformerTrainer):
        def add_model_card_callback(self, default_args_dict) -> None:
            pass  # no model card is written, so no widget examples to compute

    class Log(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                log_step(state.global_step, float(logs["loss"]))

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            value = (metrics or {}).get(f"eval_{HELDOUT_METRIC}")
            if value is not None:
                log_epoch(round(state.epoch), state.global_step, {f"mrr@{HELDOUT_K}": value})

    callbacks = [Log()]
    if evaluator is not None and cfg.patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.patience))
    with tempfile.TemporaryDirectory(prefix="embedtune-checkpoints-") as checkpoints:
        args = SentenceTransformerTrainingArguments(
            output_dir=checkpoints,
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
            eval_strategy="epoch" if evaluator is not None else "no",
            save_strategy="epoch" if evaluator is not None else "no",
            load_best_model_at_end=evaluator is not None,
            metric_for_best_model=HELDOUT_METRIC if evaluator is not None else None,
            greater_is_better=True,
            save_total_limit=1,
            save_only_model=True,
            logging_strategy="steps",
            logging_steps=1,
            report_to="none",
            disable_tqdm=True,
            use_cpu=model.device.type == "cpu",
            **mixed_precision(embed, model.device.type),
        )
        trainer = _Trainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_dict(columns),
            loss=make_full_loss(model, cfg),
            evaluator=evaluator,
            callbacks=callbacks,
        )
        trainer.remove_callback(PrinterCallback)  # our callbacks report; no dicts on stdout
        trainer.train()
        model = trainer.model
    model.prompts = {"query": embed.query_prefix, "document": embed.document_prefix}
    model.default_prompt_name = None
    return model.eval()


# --- saving and loading ---------------------------------------------------------------------


def _replace_dir(build: Callable[[Path], None], folder: Path) -> None:
    """Let `build` fill a fresh folder beside `folder`, then put it in `folder`'s place."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    old = tmp.with_name(tmp.name + ".old")
    try:
        build(tmp)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def save_adapter(adapter: nn.Module, folder: Path) -> None:
    """Write `model.safetensors` and `config.json` ("method" plus the constructor arguments)."""
    from safetensors.torch import save_file

    def build(tmp: Path) -> None:
        state = {k: v.detach().contiguous() for k, v in adapter.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        io.write_json(tmp / "config.json", adapter.config())

    _replace_dir(build, folder)


def save_full(model, folder: Path) -> None:
    """A sentence-transformers folder (safetensors, nothing pickled); config.json gets "method"."""

    def build(tmp: Path) -> None:
        model.save_pretrained(str(tmp), create_model_card=False, safe_serialization=True)
        config = json.loads((tmp / "config.json").read_text())
        io.write_json(tmp / "config.json", {**config, "method": "full"})

    _replace_dir(build, folder)


def load_adapter(folder: Path) -> nn.Module:
    from safetensors.torch import load_file

    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        raise EmbedtuneError(f"{config_path} not found: run `dvc repro train` first")
    config = json.loads(config_path.read_text())
    method = config.get("method", "adapter_linear")
    if method == "adapter_linear":
        adapter = LinearAdapter(config["in_features"], bias=config["bias"])
    elif method == "adapter_2layer":
        adapter = TwoLayerAdapter(
            config["in_features"],
            config["hidden_features"],
            bias=config["bias"],
            residual=config["add_residual"],
        )
    else:
        raise EmbedtuneError(f"{config_path}: method {method!r} is not an adapter")
    adapter.load_state_dict(load_file(str(Path(folder) / "model.safetensors")))
    return adapter.eval()


def main() -> None:
    from dvclive import Live

    params = load_params()
    cfg, dataset = params.train, load_dataset("train")
    epochs: list[tuple[int, float]] = []
    with Live(str(io.METRICS_DIR / "train"), dvcyaml=False, save_dvc_exp=False) as live:

        def log_step(step: int, loss: float) -> None:
            live.step = step
            live.log_metric("loss", loss)

        def log_epoch(epoch: int, step: int, metrics: dict[str, float]) -> None:
            live.step = step
            for name, value in metrics.items():
                live.log_metric(f"heldout/{name}", value)
            epochs.append((epoch, metrics[f"mrr@{HELDOUT_K}"]))
            print(f"epoch {epoch}: held-out mrr@{HELDOUT_K} {metrics[f'mrr@{HELDOUT_K}']:.4f}")

        if cfg.method == "full":
            from embedtune.embed import load_encoder

            base = load_encoder(params.embed, for_training=True)
            model = train_full(base, dataset, cfg, params.embed, params.seed, log_step, log_epoch)
            save_full(model, io.TUNED_DIR)
        else:
            emb = load_embeddings(io.EMBEDDINGS_DIR / "train.safetensors")
            adapter = train_adapter(emb, dataset, cfg, params.seed, log_step, log_epoch)
            save_adapter(adapter, io.TUNED_DIR)
        candidates = [e for e in epochs if cfg.method != "full" or e[0] > 0]
        if candidates:
            best_epoch, best = max(candidates, key=lambda e: e[1])  # first of equals wins
            live.summary["heldout"][f"best_mrr@{HELDOUT_K}"] = best
            live.summary["heldout"]["best_epoch"] = best_epoch
    print(f"{cfg.method} saved to {io.TUNED_DIR}")


if __name__ == "__main__":
    run_stage("train", main)
