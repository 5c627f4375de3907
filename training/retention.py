"""Retention: how much of its base model's multilinguality a student keeps.

The student is scored in the teacher's space (queries student(X), documents teacher(en)); its
base in its own space (queries base(X) with the base's query prefix, documents base(en) with
its passage prefix), which is what multilingual pre-training alone reaches. Retention per
language is the ratio of the two R@1, for languages the student was distilled on and, the
question that matters, for those it was not. A label-free companion for any monolingual text,
so a team can check its own traffic without parallel data: how well the student preserves the
base's pairwise similarities (Spearman ρ between the two cosine matrices of the same texts).

Both ``polyclip train`` (on its validation data) and ``polyclip eval`` write the table into
the student card under ``retention[<data>/<split>]``; ``export`` copies it into the bundle and
``/v1/models`` shows it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from polyclip.encoders.base import l2_normalize
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.space import CARD_FILE, read_card

SIMILARITY_TEXTS = 1000  # texts per language for ρ: 499,500 pairs, a fraction of a second


def similarity_preservation(
    a: np.ndarray, b: np.ndarray, max_texts: int = SIMILARITY_TEXTS
) -> float:
    """Spearman ρ between the pairwise cosines of the same texts under two encoders.

    1.0: the student orders every pair of texts as its base does; the dimensions (and the
    spaces) of ``a`` and ``b`` may differ. The first ``max_texts`` rows are used.
    """
    if len(a) != len(b) or len(a) < 3:
        raise EncoderError("similarity preservation needs the same 3 or more texts in both")
    a, b = l2_normalize(a[:max_texts]), l2_normalize(b[:max_texts])
    upper = np.triu_indices(len(a), k=1)
    return float(spearmanr((a @ a.T)[upper], (b @ b.T)[upper]).statistic)


def retention_table(
    student: Mapping[str, Mapping[str, float]],
    base: Mapping[str, Mapping[str, float]],
    distilled: Collection[str],
    similarity: Mapping[str, float] | None = None,
    documents: int = 0,
) -> dict[str, Any]:
    """Per language: both models' metrics, R@1 retention, distilled or not; means of each kind;
    and the student's English → English metrics when ``student`` has them (no base ratio: the
    base's own en → en is trivially perfect)."""
    rows: dict[str, Any] = {}
    for lang, s in student.items():
        if lang == "en" or lang not in base:
            continue
        b = base[lang]
        rows[lang] = {
            "distilled": lang in distilled,
            "student": {k: round(float(v), 4) for k, v in s.items()},
            "base": {k: round(float(v), 4) for k, v in b.items()},
            "retention": round(float(s["r@1"]) / float(b["r@1"]), 4) if b["r@1"] else None,
        }
        if similarity and lang in similarity:
            rows[lang]["similarity_rho"] = round(similarity[lang], 4)
    means: dict[str, float | None] = {}
    for kind, want in (("distilled", True), ("held_out", False)):
        values = [r["retention"] for r in rows.values() if r["distilled"] is want]
        values = [v for v in values if v is not None]
        means[kind] = round(float(np.mean(values)), 4) if values else None
    table = {
        "metric": "retention = student R@1 (teacher space) / base R@1 (own space)",
        "documents": documents,
        "languages": rows,
        "mean": means,
    }
    if "en" in student:  # student(en) → teacher(en): can English traffic swap models too?
        table["english"] = {k: round(float(v), 4) for k, v in student["en"].items()}
    return table


def write_card_retention(model_dir: Path, source: str, table: dict[str, Any]) -> bool:
    """Record ``table`` in a student card under ``retention[source]``; False if not a student."""
    card = read_card(model_dir)
    if "teacher" not in card:
        return False
    card.setdefault("retention", {})[source] = table
    text = json.dumps(card, indent=2, ensure_ascii=False) + "\n"
    (model_dir / CARD_FILE).write_text(text, encoding="utf-8")
    return True


def summary(table: Mapping[str, Any]) -> str:
    """``de 1.01* fr 0.98* cs 0.95`` (* = distilled) for logs and tables."""
    cells = []
    for lang, row in table["languages"].items():
        value = "–" if row["retention"] is None else f"{row['retention']:.2f}"
        cells.append(f"{lang} {value}{'*' if row['distilled'] else ''}")
    return " ".join(cells)


class BaseReference:
    """The base model in its own space on a validation set (with its own prefixes), and its query
    embeddings: what a student's retention and similarity drift are measured against."""

    def __init__(
        self,
        base: str | Path,
        val: Mapping[str, tuple[list[str], np.ndarray]],
        val_en: Mapping[str, list[str]],
        device: str = "cpu",
        batch_size: int = 64,
    ) -> None:
        from polyclip.encoders.load import load_text_encoder
        from polyclip.encoders.metrics import retrieval_metrics

        encoder = load_text_encoder(base, device=device)
        self.scores: dict[str, dict[str, float]] = {}
        self.queries: dict[str, np.ndarray] = {}
        for lang, (texts, _) in val.items():
            q = encoder.encode(texts, prefix="query", batch_size=batch_size)
            d = encoder.encode(val_en[lang], prefix="passage", batch_size=batch_size)
            self.scores[lang], self.queries[lang] = retrieval_metrics(q, d), q
        self.documents = len(next(iter(val.values()))[1]) if val else 0

    def table(
        self,
        scores: Mapping[str, Mapping[str, float]],
        queries: Mapping[str, np.ndarray],
        distilled: Collection[str],
    ) -> dict[str, Any]:
        """The student's retention table for its validation ``scores`` and ``queries``."""
        similarity = {
            lang: similarity_preservation(q, self.queries[lang])
            for lang, q in queries.items()
            if lang in self.queries and len(q) >= 3
        }
        return retention_table(scores, self.scores, distilled, similarity, self.documents)
