"""Broad English sentences to distil on: the student learns the map into the teacher's space on
text of many kinds, and its base's own multilinguality carries the map to other languages.

Sources available offline (Debian packages; none is needed by the tests or CI):

- **WordNet 3.0** (``wordnet-base``, ``/usr/share/wordnet``; Princeton WordNet licence, a
  BSD-style permission to use, copy and distribute): the gloss and the quoted usage examples
  of every synset in ``data.{noun,verb,adj,adv}`` — definitions and everyday sentences across
  the whole vocabulary (about 117k glosses and 48k examples before cleaning).
- **fortune** quotations (``fortunes``, ``/usr/share/games/fortunes``; the files are
  "collected from many sources", distributed with fortune-mod under a BSD licence): aphorisms,
  jokes and quotes; attributions (``-- Name``) are removed; the offensive set is a separate
  package and is not read.
- **The Python documentation** (``python3-doc``, ``/usr/share/doc/python3.X/html/_sources``;
  PSF licence): the reStructuredText sources, prose only (directives, code blocks, tables and
  markup removed), split into sentences — technical English.
- Any text file with one sentence per line.

Cleaning is shared: whitespace collapsed, sentences of 3–64 words and at most 400 characters
kept, exact duplicates dropped (first one kept), order fixed (sorted by source, then file order).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from polyclip.training.data import DataError

WORDNET = Path("/usr/share/wordnet")
FORTUNES = Path("/usr/share/games/fortunes")
DOCS = Path("/usr/share/doc")  # python3-doc installs python3.X/html/_sources here
MIN_WORDS, MAX_WORDS, MAX_CHARS = 3, 64, 400

_ROLE = re.compile(r":[\w:.-]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")  # :term:`text <target>` → text
_LITERAL = re.compile(r"``([^`]*)``|`([^`<]*?)(?:\s*<[^>]*>)?`_{0,2}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def clean(text: str) -> str | None:
    """One sentence, whitespace collapsed; None when too short or too long to be useful."""
    text = " ".join(text.split())
    words = len(text.split())
    if not MIN_WORDS <= words <= MAX_WORDS or len(text) > MAX_CHARS:
        return None
    return text


def wordnet_sentences(root: Path) -> Iterator[str]:
    """Glosses and quoted examples from ``data.*`` (the licence header lines start with spaces)."""
    for pos in ("noun", "verb", "adj", "adv"):
        with open(root / f"data.{pos}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue
                gloss = line.split("|", 1)[1]
                parts = [p.strip() for p in gloss.split(";")]
                for part in parts:
                    if part.startswith('"'):
                        yield part.strip('" ')
                    elif part:
                        yield part[0].upper() + part[1:]


def fortune_sentences(root: Path) -> Iterator[str]:
    """Each quotation of the plain fortune files (``%`` separates them), attribution removed."""
    for path in sorted(root.iterdir()):
        if path.suffix in (".dat", ".u8") or path.is_dir() or path.is_symlink():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for block in text.split("\n%\n"):
            lines = [x for x in block.splitlines() if not x.strip().startswith("--")]
            if any(x.startswith((" ", "\t")) for x in lines[1:]):  # verse, dialogue, ASCII art
                continue
            yield " ".join(lines)


def rst_sentences(root: Path) -> Iterator[str]:
    """Prose paragraphs of reStructuredText sources, markup stripped, split into sentences."""
    for path in sorted(root.rglob("*.rst.txt")):
        paragraph: list[str] = []
        in_block = False
        for line in [*path.read_text(encoding="utf-8", errors="replace").splitlines(), ""]:
            stripped = line.strip()
            if in_block and (not line or line.startswith((" ", "\t"))):
                continue  # the indented body of a directive or a literal block
            in_block = False
            prose = (
                stripped
                and not line.startswith((" ", "\t"))
                and not stripped.startswith(("..", "*", "=", "-", "+", "|", ">>>", "#"))
            )
            if prose:
                paragraph.append(stripped)
            if stripped.endswith("::") or stripped.startswith(".."):
                in_block = True
            if not prose and paragraph:
                text = " ".join(paragraph).removesuffix("::")
                text = _LITERAL.sub(lambda m: m[1] or m[2], _ROLE.sub(r"\1", text))
                yield from _SENTENCE_END.split(text)
                paragraph = []


def text_lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        yield from f


def default_sources() -> tuple[Path, ...]:
    """WordNet, fortunes and the newest ``python3.X`` documentation sources (``python3-doc``)."""
    docs = {
        int(m[1]): p
        for p in DOCS.glob("python3.*/html/_sources")
        if (m := re.fullmatch(r"python3\.(\d+)", p.parents[1].name))
    }
    return (WORDNET, FORTUNES, *([docs[max(docs)]] if docs else []))


def sentences_of(source: Path) -> Iterator[str]:
    """Raw sentences of one source, recognised by its layout."""
    if (source / "data.noun").is_file():
        yield from wordnet_sentences(source)
    elif source.is_dir() and next(source.rglob("*.rst.txt"), None) is not None:
        yield from rst_sentences(source)
    elif source.is_dir():
        yield from fortune_sentences(source)
    elif source.is_file():
        yield from text_lines(source)
    else:
        raise DataError(
            f"English data not found: {source} (install wordnet-base, fortunes or "
            "python3-doc, or give a file with one sentence per line)"
        )


def english_sources(names: Sequence[str]) -> list[Path]:
    """Paths for ``english_data``; ``debian`` stands for every default source installed here."""
    out: list[Path] = []
    for name in names:
        if name == "debian":
            found = [p for p in default_sources() if p.exists()]
            if not found:
                raise DataError(
                    "english_data 'debian' needs wordnet-base, fortunes or python3-doc "
                    "(apt-get install wordnet-base fortunes python3-doc)"
                )
            out += found
        else:
            out.append(Path(name))
    return out


def read_english(sources: Sequence[str | Path], limit: int = 0, seed: int = 0) -> list[str]:
    """Cleaned, de-duplicated sentences of every source; ``limit`` > 0 keeps a seeded sample."""
    seen: dict[str, None] = {}
    for source in sources:
        for raw in sentences_of(Path(source)):
            text = clean(raw)
            if text is not None:
                seen.setdefault(text, None)
    found = list(seen)
    if not found:
        raise DataError(f"no usable English sentences in {', '.join(map(str, sources))}")
    if limit and len(found) > limit:
        keep = np.random.default_rng(seed).choice(len(found), limit, replace=False)
        found = [found[i] for i in sorted(keep)]
    return found
