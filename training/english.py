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
- **Interface strings** of gettext catalogues (any directory of ``*.pot`` templates or
  ``<lang>/LC_MESSAGES/*.po|.mo`` files; the English msgids, which every translation repeats):
  labels, messages and help texts, the register of software — much of it one or two words
  (``Save``, ``Open file``), which none of the sources above has. ``make data-ui`` extracts the
  catalogues of pinned PyPI wheels into ``artifacts/data/ui``: Trac (BSD-3-Clause, a wiki and
  issue tracker's web UI), Sphinx (BSD-2-Clause, a documentation builder's messages and HTML
  theme) and JupyterLab's French language pack (BSD-3-Clause, the notebook UI; its msgids are
  the English). Django's catalogues are not among them: they are the other-domain check.
- Any text file with one sentence per line.

Cleaning is shared: whitespace collapsed, sentences of 3–64 words (1–64 for interface strings,
which must also hold two words or one of four letters beside placeholders) and at most 400
characters kept, exact duplicates dropped (first one kept). ``english_max`` samples every source
to an equal share (a source smaller than its share gives the rest to the others), so 5,000
interface strings are not drowned by WordNet's 160,000 glosses; ``exclude`` drops any sentence
that another source holds (the retention checks' own text: what is measured is never trained).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from polyclip.encoders.gettext import catalogue_files, catalogue_msgids
from polyclip.training.data import DataError

WORDNET = Path("/usr/share/wordnet")
FORTUNES = Path("/usr/share/games/fortunes")
DOCS = Path("/usr/share/doc")  # python3-doc installs python3.X/html/_sources here
MIN_WORDS, MAX_WORDS, MAX_CHARS = 3, 64, 400

_ROLE = re.compile(r":[\w:.-]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")  # :term:`text <target>` → text
_LITERAL = re.compile(r"``([^`]*)``|`([^`<]*?)(?:\s*<[^>]*>)?`_{0,2}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def clean(text: str, min_words: int = MIN_WORDS) -> str | None:
    """One sentence, whitespace collapsed; None when too short or too long to be useful."""
    text = " ".join(text.split())
    words = len(text.split())
    if not min_words <= words <= MAX_WORDS or len(text) > MAX_CHARS:
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


def _reader(source: Path) -> tuple[Callable[[Path], Iterator[str]], int]:
    """How to read one source, recognised by its layout, and the fewest words it may give."""
    if (source / "data.noun").is_file():
        return wordnet_sentences, MIN_WORDS
    if source.is_dir() and next(source.rglob("*.rst.txt"), None) is not None:
        return rst_sentences, MIN_WORDS
    if source.is_dir() and catalogue_files(source):
        return lambda root: iter(catalogue_msgids(root)), 1
    if source.is_dir():
        return fortune_sentences, MIN_WORDS
    if source.is_file():
        return text_lines, MIN_WORDS
    raise DataError(
        f"English data not found: {source} (install wordnet-base, fortunes or python3-doc, "
        "run 'make data-ui', or give a file with one sentence per line)"
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


def _cleaned(source: Path) -> Iterator[str]:
    read, min_words = _reader(source)
    for raw in read(source):
        if (text := clean(raw, min_words)) is not None:
            yield text


def _shares(sizes: Sequence[int], limit: int) -> list[int]:
    """Equal shares of ``limit``; a source smaller than its share gives what it leaves over."""
    take = [0] * len(sizes)
    left = limit
    for k, i in enumerate(sorted(range(len(sizes)), key=lambda i: sizes[i])):
        take[i] = min(sizes[i], left // (len(sizes) - k))
        left -= take[i]
    return take


def read_english(
    sources: Sequence[str | Path], limit: int = 0, seed: int = 0, exclude: Sequence[str | Path] = ()
) -> list[str]:
    """Cleaned, de-duplicated sentences of every source, none that an ``exclude`` source holds;
    ``limit`` > 0 keeps a seeded sample with an equal share per source."""
    for source in exclude:
        if not Path(source).exists():
            raise DataError(
                f"english_exclude: {source} not found (`make data-gettext` fetches Django's "
                "catalogues; --set english_exclude=[] trains without holding any text out)"
            )
    seen = {text for source in exclude for text in _cleaned(Path(source))}  # held out
    per_source: list[list[str]] = []
    for source in sources:
        found = []
        for text in _cleaned(Path(source)):
            if text not in seen:
                seen.add(text)
                found.append(text)
        per_source.append(found)
    if not any(per_source):
        raise DataError(f"no usable English sentences in {', '.join(map(str, sources))}")
    if not limit or sum(map(len, per_source)) <= limit:
        return [text for found in per_source for text in found]
    rng = np.random.default_rng(seed)
    out = []
    for found, n in zip(per_source, _shares([len(f) for f in per_source], limit), strict=True):
        out += [found[i] for i in sorted(rng.choice(len(found), n, replace=False))]
    return out
