"""Retrieval metrics shared by training (eval), export (R@1 beside speed) and bench (quality).

Queries and documents are aligned: query ``i``'s one relevant document is document ``i``, which
is how parallel caption sets (Multi30k, Flickr30k) are evaluated. :func:`evaluate_retrieval`
scores X→English retrieval of an encoder on such captions (see :mod:`polyclip.encoders.captions`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from polyclip.encoders.base import Prefix, TextEncoder
from polyclip.encoders.errors import EncoderError

METRICS = ("r@1", "r@5", "r@10", "mrr@10")


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


# ---------------------------------------------------------------- X→English retrieval
def encode_languages(
    encoder: TextEncoder, data: Mapping[str, Sequence[str]], langs: Sequence[str], prefix: Prefix
) -> dict[str, np.ndarray]:
    """One embedding matrix per language, all with the same prefix."""
    bar = tqdm(langs, desc=f"encode {encoder.info.name}", unit="lang", leave=False)
    return {lang: encoder.encode(data[lang], prefix=prefix) for lang in bar}


def score_languages(queries: Mapping[str, np.ndarray], docs: np.ndarray) -> dict[str, Any]:
    """Metrics per language and their mean over the cross-lingual ones (all but English)."""
    for lang, q in queries.items():
        if q.shape[1] != docs.shape[1]:
            raise EncoderError(
                f"{lang} queries have dimension {q.shape[1]} but the documents {docs.shape[1]}: "
                "the model is not in the teacher's embedding space"
            )
    per_lang = {lang: retrieval_metrics(q, docs) for lang, q in queries.items()}
    cross = [m for lang, m in per_lang.items() if lang != "en"] or list(per_lang.values())
    return {
        "languages": per_lang,
        "avg": {k: float(np.mean([m[k] for m in cross])) for k in METRICS},
    }


def evaluate_retrieval(
    query_encoder: TextEncoder,
    docs: TextEncoder | np.ndarray,
    data: Mapping[str, Sequence[str]],
    langs: Sequence[str],
) -> dict[str, Any]:
    """X→English retrieval for each of ``langs`` (include "en" for English→English).

    ``docs`` is the teacher (it embeds ``data["en"]`` as passages) or its embeddings, so a
    trainer evaluating every epoch embeds the documents once.
    """
    if isinstance(docs, TextEncoder):
        docs = docs.encode(data["en"], prefix="passage")
    return score_languages(encode_languages(query_encoder, data, langs, "query"), docs)
