"""CLIP and SigLIP dual encoders (tiny, random, built in code) through the real loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from polyclip.encoders import EncoderError, load_encoders, load_text_encoder
from polyclip.encoders.base import load_image
from tests.images import encode, random_image


def test_both_towers_share_one_space(dual_dir: Path) -> None:
    text, image = load_encoders(dual_dir)
    assert image is not None and text.dimension == image.dimension
    assert text.info.space == image.info.space
    t = text.encode(["a dog runs", "ein hund"])
    i = image.encode([random_image(0), random_image(1)])
    assert t.shape == i.shape == (2, text.dimension)
    np.testing.assert_allclose(np.linalg.norm(np.concatenate([t, i]), axis=1), 1.0, atol=1e-5)


def test_text_tower_matches_transformers(dual_dir: Path) -> None:
    text, _ = load_encoders(dual_dir)
    model = text.dual.model
    batch = text.dual.tokenize(["a red cat"])
    with torch.no_grad():
        ref = model.get_text_features(**batch)
    ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output
    ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    np.testing.assert_allclose(text.encode(["a red cat"]), ref, atol=1e-5)


def test_image_inputs_pil_bytes_and_path_agree(tmp_path: Path, clip_dir: Path) -> None:
    _, image = load_encoders(clip_dir)
    img = random_image(3)
    path = tmp_path / "x.png"
    img.save(path)
    a, b, c = (image.encode([x]) for x in (img, encode(img), path))
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)


def test_image_batch_invariance(clip_dir: Path) -> None:
    _, image = load_encoders(clip_dir)
    imgs = [random_image(i) for i in range(5)]
    one = np.concatenate([image.encode([x]) for x in imgs])
    np.testing.assert_allclose(one, image.encode(imgs, batch_size=8), atol=1e-5)


def test_siglip_text_is_padding_invariant(dual_dir: Path) -> None:
    text, _ = load_encoders(dual_dir)
    alone = text.encode(["a dog"])
    mixed = text.encode(["a dog", "the man sits on the red street in the park"], batch_size=8)
    np.testing.assert_allclose(alone[0], mixed[0], atol=1e-5)


def test_bad_images_are_clear_errors(clip_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="not a readable image"):
        load_image(b"definitely not an image")
    with pytest.raises(EncoderError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(EncoderError, match="over the limit"):
        load_image(encode(random_image(0, (200, 200))), max_pixels=100)


def test_text_only_loader_takes_the_text_tower(clip_dir: Path) -> None:
    enc = load_text_encoder(clip_dir)
    assert enc.encode(["a dog"]).shape == (1, 16)
