"""The parity gate: a bundle must embed like its PyTorch source, or the export fails.

Two checks. Cosine between the bundle's and the PyTorch model's unit vectors on a multilingual
probe set (minimum over the probes against a per-precision threshold). And, when a validation
set is given, the change of cross-lingual R@1: queries in language X and English documents, both
embedded by the model under test, once with the bundle and once with PyTorch; the gate reports
ΔR@1 = R@1(bundle) − R@1(PyTorch) per language (informative: quality loss shows here first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polyclip.encoders.base import ImageEncoder, TextEncoder
from polyclip.encoders.captions import read_parallel
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.metrics import evaluate_retrieval
from polyclip.encoders.probes import PARITY_TEXTS
from polyclip.export.quantize import Precision

THRESHOLDS: dict[Precision, float] = {"fp32": 0.999, "fp16": 0.995, "int8": 0.98}
VAL_PROBES_PER_LANG = 32  # validation captions added to the probe set, per language


class ParityError(EncoderError):
    """A bundle that does not match its source; the message carries the figures."""


@dataclass(frozen=True)
class ValSet:
    """Multi30k-style aligned ``{split}.{lang}.gz`` files for the ΔR@1 report."""

    data_dir: Path
    split: str = "val"
    langs: tuple[str, ...] = ("de", "fr", "cs")
    limit: int | None = None

    def load(self) -> dict[str, list[str]]:
        return read_parallel(self.data_dir, self.split, self.langs, self.limit)


def probe_texts(val: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The multilingual parity sentences, plus the first validation captions when given."""
    texts = [t for group in PARITY_TEXTS.values() for t in group]
    for captions in (val or {}).values():
        texts += list(captions[:VAL_PROBES_PER_LANG])
    return texts


def cosine_figures(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Row-wise cosine of two sets of unit vectors: min, mean and count."""
    if reference.shape != candidate.shape:
        raise ParityError(f"bundle output shape {candidate.shape} != PyTorch {reference.shape}")
    cos = np.sum(reference * candidate, axis=1)
    return {"n": int(cos.size), "min": float(cos.min()), "mean": float(cos.mean())}


def r1_by_lang(encoder: TextEncoder, data: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """X→English R@1 (%) per language, queries and documents from ``encoder`` itself."""
    langs = [lang for lang in data if lang != "en"]
    if not langs:
        raise EncoderError("cross-lingual R@1 needs at least one language other than en")
    result = evaluate_retrieval(encoder, encoder, data, langs)
    return {lang: m["r@1"] for lang, m in result["languages"].items()}


def r1_delta(torch_r1: Mapping[str, float], bundle_r1: Mapping[str, float]) -> dict[str, Any]:
    """Per-language R@1 of both backends and the bundle's change, plus the mean change."""
    langs = {
        lang: {
            "torch": torch_r1[lang],
            "bundle": bundle_r1[lang],
            "delta": bundle_r1[lang] - torch_r1[lang],
        }
        for lang in torch_r1
    }
    return {"languages": langs, "mean_delta": float(np.mean([v["delta"] for v in langs.values()]))}


@dataclass
class Reference:
    """PyTorch outputs computed before export, so the traced model never serves as reference."""

    texts: list[str]
    text: np.ndarray | None = None
    images: list | None = None
    image: np.ndarray | None = None
    val: dict[str, list[str]] | None = None
    val_r1: dict[str, float] | None = None

    @classmethod
    def compute(
        cls,
        text: TextEncoder | None,
        image: ImageEncoder | None,
        images: list,
        val: ValSet | None,
    ) -> Reference:
        data = val.load() if val is not None and text is not None else None
        ref = cls(texts=probe_texts(data), val=data)
        if text is not None:
            ref.text = text.encode(ref.texts)
            ref.val_r1 = r1_by_lang(text, data) if data else None
        if image is not None:
            ref.images, ref.image = images, image.encode(images)
        return ref


def check(
    ref: Reference,
    text: TextEncoder | None,
    image: ImageEncoder | None,
    threshold: float,
) -> dict[str, Any]:
    """Parity figures per tower, with ``passed`` set against ``threshold`` (min cosine)."""
    out: dict[str, Any] = {"threshold": threshold}
    if text is not None and ref.text is not None:
        out["text"] = cosine_figures(ref.text, text.encode(ref.texts))
        if ref.val is not None and ref.val_r1 is not None:
            out["text"]["r1"] = r1_delta(ref.val_r1, r1_by_lang(text, ref.val))
    if image is not None and ref.image is not None:
        out["image"] = cosine_figures(ref.image, image.encode(ref.images or []))
    towers = [out[k] for k in ("text", "image") if k in out]
    out["passed"] = all(t["min"] >= threshold for t in towers)
    return out


def describe(parity: Mapping[str, Any]) -> str:
    """One line of figures per tower, for logs and for the failure message."""
    lines = []
    for kind in ("text", "image"):
        if kind not in parity:
            continue
        t = parity[kind]
        line = f"{kind}: cosine min {t['min']:.5f} mean {t['mean']:.5f} over {t['n']} probes"
        if "r1" in t:
            langs = t["r1"]["languages"].items()
            per = ", ".join(f"{lang} {v['torch']:.1f}→{v['bundle']:.1f}" for lang, v in langs)
            line += f"; R@1 torch→bundle {per} (mean Δ {t['r1']['mean_delta']:+.2f})"
        lines.append(line)
    return "; ".join(lines) + f" [threshold {parity['threshold']}]"
