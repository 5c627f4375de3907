"""Closed-form heads: ridge regression from the base's pooled features to the teacher's space.

A random 384 → 768 head starts far from the unit-norm teacher targets, so early steps of
FD/ED/SD go into finding the teacher's mean. The least-squares head is the best linear map from
the frozen base (the student before training) to the teacher on the English anchors, found in
seconds from cached features; it is a head initialisation for every objective
(``head_init: lstsq``) and, with no training steps, a baseline student of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from polyclip.encoders.base import run_batched
from polyclip.encoders.sentence import SentenceEncoder
from polyclip.encoders.space import fingerprint, space_of
from polyclip.training.teacher_cache import TeacherCache

log = logging.getLogger(__name__)


def pooled_features(
    student: SentenceEncoder, texts: Sequence[str], batch_size: int = 64
) -> np.ndarray:
    """The backbone's pooled output (before any head), as float32 rows."""
    model = student.model
    was_training = model.training
    model.eval()

    def forward(batch: list[str]) -> np.ndarray:
        tokens = student.tokenize(batch)
        with torch.inference_mode():
            return model.pooled(**tokens).float().cpu().numpy()

    try:
        return run_batched(
            list(texts), forward, batch_size=batch_size, sort_key=len, normalize=False,
            desc="base features",
        )  # fmt: skip
    finally:
        model.train(was_training)


def feature_cache(root: str | Path, student: SentenceEncoder, base_dir: Path) -> TeacherCache:
    """Pooled base features, cached like teacher rows (keyed by base weights, pooling, length)."""
    ident = fingerprint(space_of(base_dir)) or base_dir.name
    key = f"base-{ident}-{student.model.pooling}-{student.info.max_seq_length}"
    return TeacherCache(Path(root) / key, lambda texts: pooled_features(student, texts))


def fit_ridge(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """``W, b`` minimising ‖(x W + b) − y‖² + λ‖W‖², λ = ridge · mean eigenvalue of xᵀx.

    Centred, in float64; returns ``W`` as (out, in), the layout of ``nn.Linear.weight``.
    """
    x, y = x.astype(np.float64), y.astype(np.float64)
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    gram = xc.T @ xc
    lam = ridge * np.trace(gram) / len(gram)
    w = np.linalg.solve(gram + lam * np.eye(len(gram)), xc.T @ yc)
    return w.T.astype(np.float32), (my - mx @ w).astype(np.float32)


def init_head_lstsq(
    student: SentenceEncoder, features: np.ndarray, targets: np.ndarray, ridge: float
) -> float:
    """Set the student's head to the ridge fit; returns the fit's mean cosine to the targets."""
    dense = student.model.dense
    assert dense is not None, "head_init lstsq needs a head"
    tanh = isinstance(student.model.activation, torch.nn.Tanh)
    goal = np.arctanh(np.clip(targets, -0.999, 0.999)) if tanh else targets
    w, b = fit_ridge(features, goal, ridge)
    with torch.no_grad():
        dense.weight.copy_(torch.from_numpy(w))
        dense.bias.copy_(torch.from_numpy(b))
    pred = features @ w.T + b
    pred = np.tanh(pred) if tanh else pred
    cos = (pred * targets).sum(1) / (np.linalg.norm(pred, axis=1) * np.linalg.norm(targets, axis=1))
    log.info("lstsq head on %d anchors: mean cosine to the teacher %.4f", len(targets), cos.mean())
    return float(cos.mean())
