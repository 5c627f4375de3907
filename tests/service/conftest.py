"""Service fixtures: tiny real models in two spaces, settings, in-process and live servers.

Model layout (all tiny, random, built in code by tests/tiny.py):
  clip-tiny     a CLIP dual encoder, 16-d (text + image), space "clip@<fingerprint>"  ← ``teacher``
  student-tiny  an XLM-R student distilled into clip-tiny's space, 16-d              ← ``student``
  other-tiny    an XLM-R student in space "other", 8-d                  (space mismatch)
  baddim-tiny   claims clip-tiny's space but gives 8-d vectors          (dimension mismatch)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polyclip.encoders.sentence import SentenceEncoder
from polyclip.encoders.space import space_of
from polyclip.service.app import create_app
from polyclip.service.config import ModelConfig, Settings
from tests.live import local_client
from tests.tiny import PREFIXES


@pytest.fixture(scope="session")
def model_dirs(tiny_dir: Path, clip_dir: Path, xlmr_dir: Path) -> dict[str, Path]:
    def student(name: str, dim: int, space: str) -> Path:
        out = tiny_dir / f"svc-{name}"
        if not out.exists():
            enc = SentenceEncoder.new_student(
                xlmr_dir,
                dimension=dim,
                space=space,
                teacher=space,
                prefixes=PREFIXES,
                max_seq_length=32,  # the tiny backbone has 34 positions
                name=name,
            )
            enc.save(out)
        return out

    clip = space_of(clip_dir)
    return {
        "clip-tiny": clip_dir,
        "student-tiny": student("student", 16, clip),
        "other-tiny": student("other", 8, "other"),
        "baddim-tiny": student("baddim", 8, clip),
    }


@pytest.fixture(scope="session")
def clip_space(clip_dir: Path) -> str:
    """The space id of clip-tiny: its model type plus the fingerprint of its weights."""
    return space_of(clip_dir)


@pytest.fixture
def make_settings(model_dirs: dict[str, Path], tmp_path: Path) -> Callable[..., Settings]:
    """Settings for the tiny models; keyword arguments override (``limits=...``, ...)."""

    def make(models: dict[str, dict[str, Any]] | None = None, **overrides: Any) -> Settings:
        cfgs = {name: {"path": str(path)} for name, path in model_dirs.items()}
        for name, extra in (models or {}).items():
            cfgs[name] = {**cfgs.get(name, {}), **extra}
        values: dict[str, Any] = {
            "models": {n: ModelConfig(**c) for n, c in cfgs.items()},
            "aliases": {"teacher": "clip-tiny", "student": "student-tiny"},
            "data_dir": tmp_path / "qdrant",
            "qdrant_url": None,
            "api_key": None,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """The real app (real models, real embedded Qdrant) in-process."""
    with local_client(create_app(make_settings())) as c:
        yield c
