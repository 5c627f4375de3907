"""The shared core: model loading, pooling, projection, preprocessing and the on-disk format.

The names below load on first use, so commands that only need the light modules (argument
types, captions, space ids) do not import torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EncoderError": "polyclip.encoders.errors",
    "EncoderInfo": "polyclip.encoders.base",
    "ImageEncoder": "polyclip.encoders.base",
    "TextEncoder": "polyclip.encoders.base",
    "load_encoders": "polyclip.encoders.load",
    "load_text_encoder": "polyclip.encoders.load",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
