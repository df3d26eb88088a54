"""`fusion_margin_mse`: distillation from the fused ranking, no cross-encoder needed.

The teacher scores each training question's positive and mined negatives by the convex fusion
of the base model's cosine and BM25 (each min-max scaled over the training corpus, the
`retrieve.fusion` `convex` candidate), and the model learns to reproduce the teacher's margins
(sentence-transformers' MarginMSELoss), so the dense model alone may carry some of what BM25
adds where a vector store has no BM25.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from embedtune.config import BM25Config
from embedtune.train.losses import LOSSES, LossConfig
from embedtune.train.losses.margin_mse import MarginMSE


class FusionMarginMSEConfig(LossConfig):
    name: Literal["fusion_margin_mse"]
    needs_scores: ClassVar[bool] = True
    dense_weight: float = Field(gt=0, lt=1)  # the teacher's weight of the base model's cosine
    bm25: BM25Config  # the teacher's BM25 (conf: the `retrieve` section's settings)

    def teacher_scores(self, inputs) -> dict[str, list[float]]:
        """[positive, negatives...] fused scores of every question with mined negatives."""
        from embedtune.retrieval.lexical import BM25Index
        from embedtune.retrieval.ranking import cosine_scorer, queries_per_block, query_blocks
        from embedtune.retrieval.scores import convex

        emb, dataset = inputs.embeddings(), inputs.dataset
        rows = {q: i for i, q in enumerate(emb.query_ids)}
        column = {c: i for i, c in enumerate(emb.corpus_ids)}
        asked = [
            q for q in emb.query_ids if inputs.negatives(q) and dataset["relevant_docs"].get(q)
        ]
        index = BM25Index.build([dataset["corpus"][c] for c in emb.corpus_ids], self.bm25)
        queries = emb.queries[[rows[q] for q in asked]]
        dense = cosine_scorer(queries, emb.corpus)
        tokens = index.query_tokens([dataset["queries"][q] for q in asked])
        scores = {}
        # one block's dense, BM25 and fused scores within the ranking's memory bound
        for lo, hi in query_blocks(len(asked), queries_per_block(len(emb.corpus_ids))):
            lexical = index.scores_of_tokens(tokens[lo:hi])
            fused = convex(dense(lo, hi), lexical, self.dense_weight)
            for offset, qid in enumerate(asked[lo:hi]):
                chunks = [dataset["relevant_docs"][qid][0], *inputs.negatives(qid)]
                picked = fused[offset, torch.tensor([column[c] for c in chunks])]
                scores[qid] = [round(float(s), 6) for s in picked]
        return scores


@LOSSES.register("fusion_margin_mse")
class FusionMarginMSE:
    Config = FusionMarginMSEConfig
    build = staticmethod(MarginMSE.build)  # the same loss; only the teacher scores differ
