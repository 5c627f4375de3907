"""Resolve a model reference (local directory or Hugging Face hub id) to a local directory.

Users with internet pass hub ids; machines without it (CI, air-gapped GPUs) must get a message
that says what to do, not a ``requests`` stack trace.
"""

from __future__ import annotations

import re
from pathlib import Path

from polyclip.encoders.errors import EncoderError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_like_hub_id(ref: str) -> bool:
    """``org/name`` or ``name`` without path syntax (``./``, ``/``, ``~``)."""
    return bool(_HUB_ID.match(ref)) and not ref.startswith((".", "~"))


def resolve_model_dir(ref: str | Path, *, revision: str | None = None) -> Path:
    """Return a local directory for ``ref``, downloading a hub snapshot when needed."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise EncoderError(f"{path} is a file; a model is a directory")
    ref = str(ref)
    if not looks_like_hub_id(ref):
        raise EncoderError(f"model directory not found: {path}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(ref, revision=revision))
    except Exception as e:  # any hub/network failure becomes one clear message
        raise EncoderError(
            f"{ref!r} is not a local directory and could not be fetched from the Hugging Face "
            f"Hub ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}). "
            "Offline? Pass a local model directory instead, e.g. one made by "
            "`polyclip models prepare --out artifacts/models`, or download it on a machine "
            "with internet (`hf download ORG/NAME --local-dir DIR`) and copy it here."
        ) from e
