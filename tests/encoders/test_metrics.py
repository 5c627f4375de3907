"""Recall@k / MRR against hand-worked rankings."""

from __future__ import annotations

import numpy as np
import pytest

from polyclip.encoders.metrics import ranking_metrics, ranks_of_gold, retrieval_metrics


def test_ranks_and_metrics_by_hand() -> None:
    scores = np.array(
        [
            [0.9, 0.1, 0.2],  # gold first
            [0.8, 0.5, 0.9],  # gold third
            [0.1, 0.7, 0.7],  # tie with a wrong doc: counts against
        ]
    )
    ranks = ranks_of_gold(scores)
    assert ranks.tolist() == [0, 2, 1]
    m = ranking_metrics(ranks, ks=(1, 2))
    assert m["r@1"] == pytest.approx(100 / 3) and m["r@2"] == pytest.approx(200 / 3)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)


def test_identical_spaces_are_perfect_and_shuffled_are_not() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert retrieval_metrics(x, x)["r@1"] == 100.0
    assert retrieval_metrics(x, x[::-1])["r@1"] < 10.0
    with pytest.raises(ValueError, match="aligned"):
        retrieval_metrics(x, x[:10])
