"""Output embedding types: float, int8, uint8, binary and ubinary, as sentence-transformers'
``quantize_embeddings`` defines them, so stored vectors stay comparable with that ecosystem.

- ``int8`` / ``uint8``: per dimension d, ``start_d`` and ``step_d = (max_d − min_d) / 255`` from
  *calibration* embeddings (the model's own embeddings of a fixed set of training captions,
  stored with it as ``calibration.npy``), then ``uint8 = clip(floor((x − start) / step), 0, 255)``
  and ``int8 = uint8 − 128``. One byte a dimension.
- ``binary`` / ``ubinary``: the sign bit of each dimension (``x > 0``), packed eight to a byte
  with ``numpy.packbits`` (most significant bit first); ``binary`` subtracts 128 to store the
  bytes as int8, as sentence-transformers does. One bit a dimension, ``ceil(D / 8)`` bytes.

With ``dimensions``, rows are cut and re-normalised first, and the calibration rows are cut and
re-normalised the same way, so the ranges fit what is quantised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from polyclip.encoders.base import l2_normalize
from polyclip.encoders.errors import EncoderError

EmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary"]
EMBEDDING_TYPES: tuple[EmbeddingType, ...] = ("float", "int8", "uint8", "binary", "ubinary")
CALIBRATION_FILE = "calibration.npy"
CALIBRATION_TEXTS = 1000  # embeddings kept: ranges from 1,000 captions, 1.5 MB at 768-d


def read_calibration(model_dir: Path) -> np.ndarray | None:
    """The stored calibration embeddings (float32 rows), or None when the model has none."""
    path = model_dir / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        return np.load(path).astype(np.float32)
    except (OSError, ValueError) as e:
        raise EncoderError(f"{path} is not a readable calibration file: {e}") from e


def write_calibration(model_dir: Path, embeddings: np.ndarray) -> Path:
    """Store calibration embeddings (float16: ranges need no more) with a model."""
    if embeddings.ndim != 2 or len(embeddings) < 2:
        raise EncoderError("calibration needs at least two embeddings")
    path = model_dir / CALIBRATION_FILE
    np.save(path, embeddings.astype(np.float16))
    return path


def truncate(rows: np.ndarray, dimensions: int | None) -> np.ndarray:
    """The first ``dimensions`` values, re-normalised (Matryoshka-style), or ``rows``."""
    return rows if dimensions is None else l2_normalize(rows[:, :dimensions])


def quantize(
    rows: np.ndarray, kind: EmbeddingType, calibration: np.ndarray | None = None
) -> np.ndarray:
    """``rows`` (unit float32, already cut) in the output type ``kind``."""
    if kind == "float":
        return rows
    if kind in ("binary", "ubinary"):
        bits = np.packbits(rows > 0, axis=1)
        return (bits.astype(np.int16) - 128).astype(np.int8) if kind == "binary" else bits
    if calibration is None:
        raise EncoderError(
            f"embedding type {kind} needs the model's calibration ranges ({CALIBRATION_FILE}); "
            "export the model, or add them with `polyclip models calibrate`"
        )
    cal = (
        calibration
        if calibration.shape[1] == rows.shape[1]
        else truncate(calibration, rows.shape[1])
    )
    start = cal.min(axis=0)
    step = (cal.max(axis=0) - start) / 255
    step = np.where(step == 0, 1, step)
    levels = np.clip(np.floor((rows - start) / step), 0, 255)
    return levels.astype(np.uint8) if kind == "uint8" else (levels - 128).astype(np.int8)


def nbytes(dimension: int, kind: EmbeddingType) -> int:
    """Bytes of one vector of ``dimension`` values in ``kind``."""
    if kind == "float":
        return 4 * dimension
    if kind in ("int8", "uint8"):
        return dimension
    return (dimension + 7) // 8
