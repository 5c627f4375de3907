"""Retrieval metrics shared by training (eval), export (R@1 beside speed) and bench (quality).

Queries and documents are aligned: query ``i``'s one relevant document is document ``i``, which
is how parallel caption sets (Multi30k, Flickr30k) are evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ranks_of_gold(scores: np.ndarray) -> np.ndarray:
    """0-based rank of the gold document (the diagonal) for each query row; ties count against."""
    gold = np.diag(scores)[:, None]
    return (scores > gold).sum(axis=1) + (scores == gold).sum(axis=1) - 1


def ranking_metrics(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k (in %) and MRR@10 from 0-based gold ranks."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no queries to evaluate")
    out = {f"r@{k}": float(100.0 * np.mean(ranks < k)) for k in ks}
    out["mrr@10"] = float(np.mean(np.where(ranks < 10, 1.0 / (ranks + 1), 0.0)))
    return out


def retrieval_metrics(
    queries: np.ndarray, docs: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@k and MRR@10 for aligned unit-vector queries and documents (cosine = dot)."""
    if queries.shape != docs.shape:
        raise ValueError(f"queries {queries.shape} and docs {docs.shape} must be aligned")
    return ranking_metrics(ranks_of_gold(queries @ docs.T), ks)
