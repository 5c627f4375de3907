"""Parallel training pairs: an English anchor, its translation and the translation's language.

Three on-disk shapes are read into one list of :class:`Pair` (several languages mixed into one
stream): line-aligned files as Multi30k ships them (``train.en.gz`` + ``train.de.gz`` ...),
TSV/CSV and JSONL, each either *long* (``en, text, lang``) or *wide* (``en`` plus one column per
language). Empty pairs are dropped, identical ones kept, and both are counted; malformed input is
a :class:`DataError` (a :class:`~polyclip.encoders.captions.CaptionsError` for line-aligned
files) naming the file and line, never a stack trace.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from polyclip.encoders.captions import read_parallel
from polyclip.encoders.errors import EncoderError

RESERVED = ("en", "image", "text", "lang")  # columns that are never a language
TABLE_FORMATS = {".tsv": "\t", ".csv": ","}


class DataError(EncoderError):
    """Training data that cannot be used; the message names the file (and line) and why."""


@dataclass(frozen=True, slots=True)
class Pair:
    """One training example; ``image`` is set only when the data names an image for the pair."""

    en: str
    text: str
    lang: str
    image: str | None = None


@dataclass
class DataStats:
    """What reading did to the input, so a run can report it instead of hiding it."""

    pairs: Counter = field(default_factory=Counter)  # kept pairs per language
    dropped_empty: int = 0
    identical: int = 0  # kept: a caption that needs no translation is still a valid pair
    over_long: int = 0  # student inputs the tokenizer truncates (set by the trainer)
    broad_english: int = 0  # English-only pairs from broad English data (set by the trainer)

    def add(self, pair: Pair) -> bool:
        """Count ``pair``; False when it must be dropped (empty side)."""
        if not pair.en or not pair.text:
            self.dropped_empty += 1
            return False
        self.identical += pair.en == pair.text
        self.pairs[pair.lang] += 1
        return True

    def as_dict(self) -> dict[str, Any]:
        return {
            "pairs": dict(self.pairs),
            "dropped_empty": self.dropped_empty,
            "identical": self.identical,
            "over_long": self.over_long,
            "broad_english": self.broad_english,
        }


def default_data_dir() -> Path:
    """Multi30k: ``$POLYCLIP_DATA``, else ``data/multi30k``, else ``../shared/data/multi30k``."""
    env = os.environ.get("POLYCLIP_DATA")
    if env:
        return Path(env)
    tried = [Path("data/multi30k"), Path("../shared/data/multi30k")]
    for path in tried:
        if path.is_dir():
            return path
    raise DataError(
        f"no training data: $POLYCLIP_DATA is unset and {' and '.join(map(str, tried))} do not "
        "exist; pass --data DIR"
    )


# ---------------------------------------------------------------- file access
def _lines(path: Path, *, keepends: bool = False) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line); each line is decoded alone so errors name it."""
    lineno = 0
    try:
        with gzip.open(path) if path.name.endswith(".gz") else open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                line = raw.decode("utf-8-sig")
                yield lineno, line if keepends else line.rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{lineno}: not UTF-8 text ({e.reason})") from e
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: unreadable after line {lineno} ({e})") from e


def _find(directory: Path, stem: str, suffixes: Sequence[str]) -> Path | None:
    for suffix in suffixes:
        for name in (f"{stem}{suffix}.gz", f"{stem}{suffix}"):
            if (directory / name).is_file():
                return directory / name
    return None


def _image_path(value: str, base: Path) -> str:
    return str(base / value) if value and not Path(value).is_absolute() else value


# ---------------------------------------------------------------- readers
def read_aligned(directory: Path, split: str, languages: Sequence[str]) -> list[Pair]:
    """``{split}.en[.gz]`` plus ``{split}.{lang}[.gz]``: line i of each file is one caption.

    Read by :func:`polyclip.encoders.captions.read_parallel`, whose errors are
    :class:`~polyclip.encoders.captions.CaptionsError`; blank lines come back as empty pairs.
    """
    if not all(languages):
        raise DataError(f"{directory}: an empty language name in {list(languages)}")
    data = read_parallel(directory, split, languages)
    return [
        Pair(en, text, lang)
        for lang in languages
        for en, text in zip(data["en"], data[lang], strict=True)
    ]


def _row_pairs(
    row: dict[str, Any], where: str, languages: Sequence[str] | None, base: Path
) -> list[Pair]:
    """Pairs from one long (``en, text, lang``) or wide (``en, de, fr``) record."""
    for key, value in row.items():
        if value is not None and not isinstance(value, str):
            raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    if not isinstance(row.get("en"), str):
        raise DataError(f"{where}: missing the English anchor field 'en'")
    image = _image_path(row["image"].strip(), base) if row.get("image") else None
    if "text" in row:
        lang = (row.get("lang") or "").strip()
        if not lang:
            raise DataError(f"{where}: a record with 'text' needs a non-empty 'lang'")
        if languages is not None and lang not in languages:
            return []
        return [Pair(row["en"].strip(), (row["text"] or "").strip(), lang, image)]
    langs = languages if languages is not None else [k for k in row if k not in RESERVED]
    missing = [lang for lang in langs if lang not in row]
    if missing:
        raise DataError(f"{where}: no column for language(s) {missing}")
    return [Pair(row["en"].strip(), (row[lang] or "").strip(), lang, image) for lang in langs]


def read_table(path: Path, languages: Sequence[str] | None = None) -> list[Pair]:
    """TSV (unquoted) or CSV (quoted) with a header row; long or wide columns."""
    delimiter = TABLE_FORMATS[_suffix(path)]
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    lines = (line for _, line in _lines(path, keepends=True))
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting)
    pairs: list[Pair] = []
    try:
        header = [h.strip() for h in next(reader, [])]
        if "en" not in header:
            raise DataError(f"{path}:1: header needs an 'en' column, got {header}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{where}: {len(row)} fields, the header has {len(header)}")
            record = dict(zip(header, row, strict=True))
            pairs += _row_pairs(record, where, languages, path.parent)
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: {e}") from e
    return pairs


def read_jsonl(path: Path, languages: Sequence[str] | None = None) -> list[Pair]:
    """One JSON object per line: ``{"en", "text", "lang"}`` or ``{"en", "de", "fr", ...}``."""
    pairs: list[Pair] = []
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg})") from e
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        pairs += _row_pairs(record, where, languages, path.parent)
    return pairs


def _suffix(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    return Path(name).suffix.lower()


def read_pairs(
    source: str | Path, split: str, languages: Sequence[str] | None, *, limit: int = 0
) -> tuple[list[Pair], DataStats]:
    """Pairs of ``split`` from a directory (aligned files or ``{split}.tsv|csv|jsonl``) or a file.

    ``limit`` keeps the first pairs of each language (0 keeps all); a file source has no splits,
    so ``split`` only picks a file inside a directory.
    """
    path = Path(source)
    if path.is_dir():
        if _find(path, f"{split}.en", [""]) is not None:
            if not languages:
                raise DataError(f"{path}: line-aligned data needs the languages to read")
            pairs = read_aligned(path, split, languages)
        else:
            found = _find(path, split, [".tsv", ".csv", ".jsonl"])
            if found is None:
                raise DataError(
                    f"{path}: no {split!r} split ({split}.en[.gz] with {split}.LANG[.gz], "
                    f"or {split}.tsv, .csv or .jsonl)"
                )
            return read_pairs(found, split, languages, limit=limit)
    elif not path.exists():
        raise DataError(f"data not found: {path}")
    elif _suffix(path) in TABLE_FORMATS:
        pairs = read_table(path, languages)
    elif _suffix(path) in (".jsonl", ".json"):
        pairs = read_jsonl(path, languages)
    else:
        raise DataError(f"{path}: unknown data format; use .tsv, .csv or .jsonl (optionally .gz)")
    stats, kept = DataStats(), []
    for pair in pairs:
        if (not limit or stats.pairs[pair.lang] < limit) and stats.add(pair):
            kept.append(pair)
    if not kept:
        raise DataError(f"{path}: no usable pairs for languages {list(languages or [])}")
    return kept, stats


def read_keys(path: str | Path) -> list[str]:
    """One anchor per line (English sentences or image paths), unique, in file order."""
    path = Path(path)
    return list(dict.fromkeys(line.strip() for _, line in _lines(path) if line.strip()))


def queue_anchors(keys: Sequence[str], size: int, seed: int, queue_data: str = "") -> list[str]:
    """The DR queue's ``size`` anchors: the first of ``queue_data``, else drawn from ``keys``.

    Drawn anchors are distinct and seeded; the caller removes their pairs from training.
    """
    pool = read_keys(queue_data) if queue_data else list(dict.fromkeys(keys))
    if len(pool) < size:
        where = queue_data or "the training data"
        raise DataError(
            f"the DR queue needs queue_size={size} distinct anchors but {where} has "
            f"{len(pool)}; lower queue_size (--queue-size N, N at most a fraction of "
            f"{len(pool)}: the queue's anchors leave training) or give queue_data (a file of "
            "extra English sentences, one per line)"
        )
    if queue_data:
        return pool[:size]
    chosen = np.random.default_rng(seed).permutation(len(pool))[:size]
    return [pool[i] for i in sorted(chosen)]


def token_lengths(texts: Sequence[str], tokenizer: Any) -> np.ndarray:
    """Untruncated token count of each text (for over-long counts and length grouping)."""
    ids = tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
    return np.array([len(x) for x in ids], dtype=np.int64)


# ---------------------------------------------------------------- batching
@dataclass
class BatchStream:
    """Seeded per-epoch permutations cut into full batches of pair indices.

    ``(epoch, step)`` is the whole position, so a checkpoint resumes on exactly the next batch;
    every rank computes the same global batch and takes its own share of it. With ``lengths``
    the batches hold texts of similar length (Hugging Face's ``group_by_length``): the shuffled
    epoch is cut into mega-batches of ``GROUP`` batches, each sorted by length, and the batches
    are shuffled again, so padding (half the tokens of random Multi30k batches) mostly goes.
    """

    GROUP: ClassVar[int] = 50

    size: int
    batch_size: int
    seed: int
    lengths: np.ndarray | None = None
    epoch: int = 0
    step: int = 0  # batches already taken from this epoch
    _order: tuple[int, np.ndarray] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.steps_per_epoch == 0:
            raise DataError(
                f"{self.size} training pairs is less than one batch of "
                f"{self.batch_size}; lower batch_size or add data"
            )

    @property
    def steps_per_epoch(self) -> int:
        return self.size // self.batch_size

    def next(self) -> np.ndarray:
        if self.step >= self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        start = self.step * self.batch_size
        self.step += 1
        return self._epoch_order()[start : start + self.batch_size]

    def _epoch_order(self) -> np.ndarray:
        if self._order is None or self._order[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = rng.permutation(self.size)
            if self.lengths is not None:
                mega = self.batch_size * self.GROUP
                chunks = [order[i : i + mega] for i in range(0, self.size, mega)]
                order = np.concatenate(
                    [c[np.argsort(-self.lengths[c], kind="stable")] for c in chunks]
                )
                batches = order[: self.steps_per_epoch * self.batch_size].reshape(
                    -1, self.batch_size
                )
                order = batches[rng.permutation(len(batches))].ravel()
            self._order = (self.epoch, order)
        return self._order[1]

    @property
    def progress(self) -> float:
        """Epochs done, fractional (what logs and provenance report)."""
        return round(self.epoch + self.step / self.steps_per_epoch, 4)

    @property
    def epoch_done(self) -> bool:
        return self.step >= self.steps_per_epoch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
