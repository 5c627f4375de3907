"""One entry point that picks the right encoder class for a model directory or hub id."""

from __future__ import annotations

from pathlib import Path

from polyclip.encoders.base import ImageEncoder, TextEncoder
from polyclip.encoders.dual import DualImageEncoder, DualModel, DualTextEncoder, is_dual_dir
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.hub import resolve_model_dir
from polyclip.encoders.onnx_bundle import OnnxTextEncoder, is_bundle_dir, load_bundle
from polyclip.encoders.sentence import SentenceEncoder


def load_text_encoder(ref: str | Path, *, device: str = "cpu") -> TextEncoder:
    """A text encoder for a student, an ST folder, a CLIP/SigLIP model or an ONNX bundle."""
    path = resolve_model_dir(ref)
    if is_bundle_dir(path):
        return OnnxTextEncoder(path, device=device)
    if is_dual_dir(path):
        return DualTextEncoder(DualModel(path, device=device))
    return SentenceEncoder.load(path, device=device)


def load_encoders(
    ref: str | Path, *, device: str = "cpu"
) -> tuple[TextEncoder, ImageEncoder | None]:
    """Both towers of a dual encoder (one model in memory), or a text encoder and None."""
    path = resolve_model_dir(ref)
    if is_bundle_dir(path):
        text, image = load_bundle(path, device=device)
        if text is None:
            raise EncoderError(f"bundle {path} holds only an image tower; use load_bundle()")
        return text, image
    if is_dual_dir(path):
        dual = DualModel(path, device=device)
        return DualTextEncoder(dual), DualImageEncoder(dual)
    return SentenceEncoder.load(path, device=device), None
