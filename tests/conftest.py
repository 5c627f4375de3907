"""Shared fixtures: tiny random models saved once per session and loaded by the real loaders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tiny import save_backbone, save_dual

# A closed local port stands in for the Hugging Face Hub: downloads fail fast, as offline.
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session", params=["xlmr", "bert", "distilbert"])
def backbone_dir(request: pytest.FixtureRequest, tiny_dir: Path) -> Path:
    out = tiny_dir / request.param
    return out if out.exists() else save_backbone(request.param, out)


@pytest.fixture(scope="session")
def xlmr_dir(tiny_dir: Path) -> Path:
    out = tiny_dir / "xlmr"
    return out if out.exists() else save_backbone("xlmr", out)


@pytest.fixture(scope="session", params=["clip", "siglip"])
def dual_dir(request: pytest.FixtureRequest, tiny_dir: Path) -> Path:
    out = tiny_dir / request.param
    return out if out.exists() else save_dual(request.param, out)


@pytest.fixture(scope="session")
def clip_dir(tiny_dir: Path) -> Path:
    out = tiny_dir / "clip"
    return out if out.exists() else save_dual("clip", out)


@pytest.fixture(scope="session")
def real_models_dir() -> Path:
    """The models from `polyclip models prepare`; missing ones fail the real tier, never skip it."""
    default = Path(__file__).resolve().parents[1] / "artifacts" / "models"
    path = Path(os.environ.get("POLYCLIP_TEST_MODELS", default))
    names = ("all-mpnet-base-v2", "all-MiniLM-L6-v2", "multilingual-e5-small")
    if not all((path / name / "modules.json").is_file() for name in names):
        pytest.fail(f"real models missing under {path}: run `polyclip models prepare --out {path}`")
    return path


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: one thread avoids OpenMP spin-waits (2-20x)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
