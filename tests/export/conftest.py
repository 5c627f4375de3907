"""Tiny exportable models and a tiny Multi30k-style validation set, built once per session."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from encoders.sentence import CARD_FILE, SentenceEncoder
from export.bundle import ExportOptions, export_bundle
from tests.tiny import save_backbone

PREFIXES = {"query": "query: ", "passage": "passage: "}
# Aligned toy captions in the tiny vocabulary (tests/tiny.py): en, de, fr, cs (cs: unknown words).
_SUBJECTS = [("dog", "hund", "chien"), ("cat", "katze", "chat"), ("man", "mann", "homme"),
             ("woman", "frau", "femme"), ("child", "kind", "enfant")]  # fmt: skip
_VERBS = [("runs", "läuft", "court"), ("walks", "läuft", "marche"), ("sits", "sitzt", "court")]
_PLACES = [("in the park", "im park", "parc"), ("on the street", "auf der", "rue"),
           ("in the water", "im wasser", "eau")]  # fmt: skip
_COLOURS = [("red", "rot", "rouge"), ("blue", "blau", "bleu"), ("two", "zwei", "deux")]


def write_val(out: Path, n: int = 24, seed: int = 0) -> Path:
    """``val.{en,de,fr,cs}.gz`` with ``n`` aligned captions; Czech reuses German words."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[str]] = {"en": [], "de": [], "fr": [], "cs": []}
    for _ in range(n):
        s, v, p, c = (x[rng.integers(len(x))] for x in (_SUBJECTS, _VERBS, _PLACES, _COLOURS))
        rows["en"].append(f"a {c[0]} {s[0]} {v[0]} {p[0]}")
        rows["de"].append(f"ein {c[1]} {s[1]} {v[1]} {p[1]}")
        rows["fr"].append(f"un {c[2]} {s[2]} {v[2]} {p[2]}")
        rows["cs"].append(f"{s[1]} {p[1]}")
    out.mkdir(parents=True, exist_ok=True)
    for lang, lines in rows.items():
        with gzip.open(out / f"val.{lang}.gz", "wt", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return out


def save_student(backbone: Path, out: Path, head: str = "linear", dimension: int = 16) -> Path:
    """A tiny student (pooling + head) with prefixes and a polyclip card."""
    torch.manual_seed(1)
    enc = SentenceEncoder.new_student(
        backbone,
        dimension=dimension,
        space="tiny-teacher",
        teacher="tiny-teacher",
        head=head,  # type: ignore[arg-type]
        prefixes=PREFIXES,
        max_seq_length=24,
        name=f"student-{backbone.name}-{head}",
    )
    return enc.save(out)


@pytest.fixture(autouse=True, scope="module")
def _export_tests_on_one_thread(one_torch_thread: None) -> None:
    """Every export test module runs on one torch thread (the shared fixture in tests/)."""


@pytest.fixture(scope="session")
def val_dir(tiny_dir: Path) -> Path:
    return write_val(tiny_dir / "multi30k")


@pytest.fixture(scope="session")
def student_dir(tiny_dir: Path, xlmr_dir: Path) -> Path:
    out = tiny_dir / "student-xlmr"
    return out if out.exists() else save_student(xlmr_dir, out)


@pytest.fixture(scope="session")
def st_teacher_dir(tiny_dir: Path) -> Path:
    """A plain sentence-transformers folder (mean pooling, Normalize, no card): a text teacher."""
    out = tiny_dir / "st-teacher"
    if not out.exists():
        bert = tiny_dir / "bert"
        save_student(bert if bert.exists() else save_backbone("bert", bert), out, "none", 32)
        (out / CARD_FILE).unlink()
    return out


@pytest.fixture(scope="session")
def student_bundle(tiny_dir: Path, student_dir: Path) -> Path:
    """The xlmr student exported at fp32, shared by the tests that only read a bundle."""
    out = tiny_dir / "bundles" / "student-fp32"
    if not out.exists():
        export_bundle(student_dir, out, ExportOptions())
    return out
