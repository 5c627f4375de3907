"""Line-aligned caption files, as Multi30k ships them: line i of every language is one caption.

``{split}.{lang}.gz`` or plain ``{split}.{lang}``. Training (its pairs), export (R@1 beside
parity and speed) and bench (quality) all read them through :func:`read_parallel`. Blank lines
are kept as empty strings so that line i stays caption i in every language; a caller that cannot
use an empty caption drops it itself.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Sequence
from pathlib import Path

from polyclip.encoders.errors import EncoderError


class CaptionsError(EncoderError):
    """Caption files that cannot be used; the message names the file (and line) and why."""


def caption_file(data_dir: str | Path, split: str, lang: str) -> Path:
    """``{split}.{lang}.gz``, else ``{split}.{lang}``; an error naming both if neither exists."""
    data_dir = Path(data_dir)
    for name in (f"{split}.{lang}.gz", f"{split}.{lang}"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise CaptionsError(f"{data_dir}: no {split}.{lang}.gz or {split}.{lang} ({lang!r} captions)")


def read_captions(path: Path) -> list[str]:
    """One caption per line, whitespace stripped; lines are decoded alone so errors name them."""
    captions: list[str] = []  # the lines decoded so far, so the next one is line len + 1
    try:
        with gzip.open(path) if path.name.endswith(".gz") else open(path, "rb") as f:
            for raw in f:
                captions.append(raw.decode("utf-8-sig").strip())
    except UnicodeDecodeError as e:
        raise CaptionsError(f"{path}:{len(captions) + 1}: not UTF-8 text ({e.reason})") from e
    except (OSError, EOFError, zlib.error) as e:
        raise CaptionsError(f"{path}: unreadable after line {len(captions)} ({e})") from e
    return captions


def texts_sha256(texts: Sequence[str]) -> str:
    """A fingerprint of a list of texts, so two tools can check they measured the same ones."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()[:16]


def read_parallel(
    data_dir: str | Path, split: str, langs: Sequence[str], limit: int | None = None
) -> dict[str, list[str]]:
    """English plus ``langs`` as parallel lists (item i of each is one caption), "en" first.

    Repeated languages, empty names and "en" in ``langs`` are read once. The whole files must
    have the same number of lines; ``limit`` then keeps the first ``limit`` captions.
    """
    if limit is not None and limit < 1:
        raise CaptionsError(f"caption limit must be at least 1, got {limit}")
    en_path = caption_file(data_dir, split, "en")
    english = read_captions(en_path)
    if not english:
        raise CaptionsError(f"{en_path}: no captions")
    data = {"en": english}
    for lang in dict.fromkeys(langs):
        if not lang or lang == "en":
            continue
        path = caption_file(data_dir, split, lang)
        texts = read_captions(path)
        if len(texts) != len(english):
            raise CaptionsError(
                f"{path}:{min(len(texts), len(english)) + 1}: {len(texts)} lines, but "
                f"{en_path} has {len(english)}; line-aligned files must match"
            )
        data[lang] = texts
    return {lang: texts[:limit] for lang, texts in data.items()}
