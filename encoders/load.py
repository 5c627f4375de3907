"""One entry point that picks the right encoder class for a model directory or hub id."""

from __future__ import annotations

from pathlib import Path

from encoders.base import ImageEncoder, TextEncoder
from encoders.dual import DualImageEncoder, DualModel, DualTextEncoder, is_dual_dir
from encoders.hub import resolve_model_dir
from encoders.sentence import SentenceEncoder


def load_text_encoder(ref: str | Path, *, device: str = "cpu") -> TextEncoder:
    """A text encoder for a student, a sentence-transformers folder or a CLIP/SigLIP model."""
    path = resolve_model_dir(ref)
    if is_dual_dir(path):
        return DualTextEncoder(DualModel(path, device=device))
    return SentenceEncoder.load(path, device=device)


def load_encoders(
    ref: str | Path, *, device: str = "cpu"
) -> tuple[TextEncoder, ImageEncoder | None]:
    """Both towers of a dual encoder (one model in memory), or a text encoder and None."""
    path = resolve_model_dir(ref)
    if is_dual_dir(path):
        dual = DualModel(path, device=device)
        return DualTextEncoder(dual), DualImageEncoder(dual)
    return SentenceEncoder.load(path, device=device), None
