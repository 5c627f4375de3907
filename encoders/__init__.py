"""The shared core: model loading, pooling, projection, preprocessing and the on-disk format."""

from encoders.base import EncoderError, EncoderInfo, ImageEncoder, TextEncoder
from encoders.load import load_encoders, load_text_encoder

__all__ = [
    "EncoderError",
    "EncoderInfo",
    "ImageEncoder",
    "TextEncoder",
    "load_encoders",
    "load_text_encoder",
]
