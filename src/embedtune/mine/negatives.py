"""Training data that teaches ranking, built once from the base model's view of the training split.

Three decisions, each counted in metrics/mine.json:
- seen-corpus questions: `mine.seen_corpus_fraction` of the training questions (not chunks) are
  kept aside; neither training nor model selection sees them, and `eval` scores them over the
  training corpus (the "new questions about my own documents" case);
- round-trip consistency: a training question is kept only if the base model ranks its chunk
  within `mine.roundtrip_top_k` of the training corpus (questions that do not find their own
  chunk are often vague or about something else);
- hard negatives: sentence-transformers' `mine_hard_negatives` offers, per kept question, the
  chunks the base model ranks within `mine.negative_ranks` (the positive and chunks with its
  text excluded, and any scoring above the positive's score less `mine.relative_margin` of it);
  here the first `mine.negatives` that do not share `mine.overlap_words` consecutive words with
  the positive are kept (neighbouring chunks overlap, so they often hold the answer too).
With `mine.cross_encoder`, the cross-encoder scores (question, positive, negatives) for
distillation. Validation and benchmark questions are never filtered or mined.
"""

from __future__ import annotations

from embedtune.config import EmbedConfig, MineConfig
from embedtune.embeddings import SplitEmbeddings
from embedtune.mine.mined import Mined
from embedtune.retrieval.ranking import binary_qrels, rank
from embedtune.sampling import at_most, share
from embedtune.text import words


def seen_corpus_questions(
    query_ids: list[str], fraction: float, seed: int, cap: int | None = None
) -> list[str]:
    """The `fraction` of the questions (rounded, at most `cap`) whose seeded hash of the id is
    smallest, in their given order."""
    count = share(len(query_ids), fraction)
    return at_most(query_ids, count if cap is None else min(count, cap), seed, "seen")


def base_ranks(emb: SplitEmbeddings, dataset: dict, query_ids: list[str]) -> dict[str, int]:
    """Rank of each question's best chunk under the base model, over the whole training corpus."""
    row = {qid: i for i, qid in enumerate(emb.query_ids)}
    queries = emb.queries[[row[q] for q in query_ids]]
    qrels = binary_qrels(query_ids, dataset["relevant_docs"])
    best = rank(queries, emb.corpus, query_ids, emb.corpus_ids, qrels).best
    return {qid: int(r) for qid, r in zip(query_ids, best, strict=True)}


def shares_run(a: list[str], b: list[str], length: int) -> bool:
    """Whether the word lists `a` and `b` share `length` consecutive words."""
    if len(a) < length or len(b) < length:
        return False
    runs = {tuple(a[i : i + length]) for i in range(len(a) - length + 1)}
    return any(tuple(b[i : i + length]) in runs for i in range(len(b) - length + 1))


def candidate_texts(encoder, dataset: dict, query_ids: list[str], cfg: MineConfig, embed):
    """Per question id, the texts `mine_hard_negatives` offers, hardest first (maybe none)."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    corpus, queries, relevant = dataset["corpus"], dataset["queries"], dataset["relevant_docs"]
    pairs = [(q, c) for q in query_ids for c in relevant[q]]
    first, last = cfg.negative_ranks
    mined = mine_hard_negatives(
        Dataset.from_dict(
            {"anchor": [queries[q] for q, _ in pairs], "positive": [corpus[c] for _, c in pairs]}
        ),
        encoder,
        corpus=list(corpus.values()),
        range_min=first - 1,
        range_max=last,
        num_negatives=last - first + 1,
        relative_margin=cfg.relative_margin,
        query_prompt=embed.query_prefix,
        corpus_prompt=embed.document_prefix,
        output_format="labeled-list",
        batch_size=embed.batch_size,
        verbose=False,
    )
    by_text = {queries[q]: q for q in query_ids}
    return {by_text[row["anchor"]]: row["positive"][1:] for row in mined}


def pick_negatives(
    dataset: dict, query_ids: list[str], offered: dict[str, list[str]], cfg: MineConfig
) -> tuple[dict[str, list[str]], int]:
    """The first `cfg.negatives` offered chunks per question that do not overlap its positive;
    and how many offered chunks were skipped for overlapping."""
    corpus, relevant = dataset["corpus"], dataset["relevant_docs"]
    id_of = {}
    for cid, text in corpus.items():
        id_of.setdefault(text, cid)
    negatives, skipped = {}, 0
    for qid in query_ids:
        positives = [words(corpus[c]) for c in relevant[qid]]
        kept = []
        for text in offered.get(qid, []):
            if len(kept) == cfg.negatives:
                break
            if any(shares_run(p, words(text), cfg.overlap_words) for p in positives):
                skipped += 1
                continue
            kept.append(id_of[text])
        negatives[qid] = kept
    return negatives, skipped


def cross_encoder_scores(
    model, dataset: dict, negatives: dict[str, list[str]], batch_size: int
) -> dict[str, list[float]]:
    """[positive, negatives...] scores of a `CrossEncoder` per question (first positive)."""
    corpus, queries, relevant = dataset["corpus"], dataset["queries"], dataset["relevant_docs"]
    rows = {q: [relevant[q][0], *negs] for q, negs in negatives.items()}
    pairs = [(queries[q], corpus[c]) for q, cids in rows.items() for c in cids]
    flat = model.predict(pairs, batch_size=batch_size, show_progress_bar=False) if pairs else []
    scores, at = {}, 0
    for qid, cids in rows.items():
        scores[qid] = [round(float(s), 6) for s in flat[at : at + len(cids)]]
        at += len(cids)
    return scores


def mine(
    emb: SplitEmbeddings,
    dataset: dict,
    cfg: MineConfig,
    embed: EmbedConfig,
    seed: int,
    encoder=None,
    cross_encoder=None,
) -> tuple[Mined, dict]:
    """Roles, filter and negatives of the training split; returns them and their counts.

    `encoder` (the base model) is needed when `cfg.negatives` > 0, `cross_encoder` when
    `cfg.cross_encoder` is set.
    """
    labelled = [q for q in emb.query_ids if dataset["relevant_docs"].get(q)]
    seen = seen_corpus_questions(labelled, cfg.seen_corpus_fraction, seed, cfg.seen_corpus_max)
    aside = set(seen)  # built once: a set per question made this quadratic
    rest = [q for q in labelled if q not in aside]
    dropped = {}
    if cfg.roundtrip_top_k:
        ranks = base_ranks(emb, dataset, rest)
        dropped = {q: r for q, r in ranks.items() if r > cfg.roundtrip_top_k}
    kept = [q for q in rest if q not in dropped]
    offered = candidate_texts(encoder, dataset, kept, cfg, embed) if cfg.negatives and kept else {}
    negatives, overlapping = pick_negatives(dataset, kept, offered, cfg)
    mined = Mined(seen, dropped, negatives)
    if cross_encoder is not None:
        mined.scores = cross_encoder_scores(cross_encoder, dataset, negatives, embed.batch_size)
    counts = {
        "questions": len(labelled),
        "seen_corpus": len(seen),
        "roundtrip_dropped": len(dropped),
        "training": len(kept),
        "negatives": sum(len(n) for n in negatives.values()),
        "short_of_negatives": sum(len(n) < cfg.negatives for n in negatives.values()),
        "skipped_overlapping": overlapping,
        "cross_encoder_scored": len(mined.scores),
    }
    return mined, counts
