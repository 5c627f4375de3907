"""argparse value types shared by every ``polyclip`` command."""

from __future__ import annotations

import argparse


def str_list(text: str) -> list[str]:
    """``de,fr,cs`` as ``["de", "fr", "cs"]``; blanks are dropped, an empty list is refused."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return values
