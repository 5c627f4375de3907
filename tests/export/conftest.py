"""Tiny exportable models and a tiny Multi30k-style validation set, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyclip.encoders.space import CARD_FILE
from polyclip.export.bundle import ExportOptions, export_bundle
from tests.captions import write_val
from tests.tiny import save_backbone, save_student


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
