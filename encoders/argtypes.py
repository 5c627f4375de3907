"""argparse value types shared by every ``polyclip`` command."""

from __future__ import annotations

import argparse
import re


def str_list(text: str) -> list[str]:
    """``de,fr,cs`` as ``["de", "fr", "cs"]``; blanks are dropped, an empty list is refused."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return values


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


def parse_duration(text: str) -> float:
    """``30s``, ``500ms``, ``2m`` or plain seconds, as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive duration: {text!r} (e.g. 30s, 2m)")
    return float(match[1]) * _UNITS[match[2] or ""]


def int_list(text: str) -> list[int]:
    """``1,4,16`` as ``[1, 4, 16]``; every value must be a positive integer."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,4,16; got {text!r}")
    return values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def float_list(text: str) -> list[float]:
    """``0.25,0.5`` as ``[0.25, 0.5]``; an empty list or a non-number is refused."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.25,0.5; got {text!r}")
    return values
