"""The shared core: model loading, pooling, projection, preprocessing and the on-disk format."""

from polyclip.encoders.base import EncoderInfo, ImageEncoder, TextEncoder
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.load import load_encoders, load_text_encoder

__all__ = [
    "EncoderError",
    "EncoderInfo",
    "ImageEncoder",
    "TextEncoder",
    "load_encoders",
    "load_text_encoder",
]
