"""Parallel text of another domain: gettext catalogues (``.po``), as Python packages ship them.

Django, for one, ships its interface strings in ~100 languages
(``django/**/locale/<lang>/LC_MESSAGES/django.po``): short UI texts, error messages and
help texts — very unlike image captions. Each English ``msgid`` and its ``msgstr`` in language X
is one pair. :func:`read_gettext` returns them aligned like :func:`polyclip.encoders.captions.
read_parallel` (item i of every language is one entry), keeping only entries every requested
language translates, so each language is scored on the same documents.

Dropped, and counted: obsolete, fuzzy, untranslated and plural entries; entries whose English
is placeholders and punctuation only (``%(value)s``, ``{name}``, ``…``) or a single short
token; entries any requested language leaves identical to the English (an English model would
match them without understanding the language); repeated English texts (other contexts). The
split is a hash of the English text: ``val`` and ``test`` are disjoint halves, stable across
runs and languages; ``all`` is both.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyclip.encoders.errors import EncoderError

SPLITS = ("val", "test", "all")
_PLACEHOLDER = re.compile(
    r"%\([^)]*\)[-#0 +]*\d*(?:\.\d+)?[a-zA-Z]"  # %(name)s, %(count)5.2f
    r"|%[-#0 +]*\d*[a-zA-Z%]"  # %s, %d, %%
    r"|\{[^}]*\}"  # {name}
)
_WORD = re.compile(r"[^\W\d_]{2,}")


def is_gettext_dir(path: Path) -> bool:
    """True for a directory holding ``<lang>/LC_MESSAGES/*.po`` catalogues at any depth."""
    return path.is_dir() and next(path.glob("**/LC_MESSAGES/*.po"), None) is not None


def usable_msgid(msgid: str) -> bool:
    """Two words, or one of four letters or more, once placeholders are taken out."""
    words = _WORD.findall(_PLACEHOLDER.sub(" ", msgid))
    return len(words) >= 2 or (len(words) == 1 and len(words[0]) >= 4)


def _split_of(msgid: str) -> str:
    return "val" if hashlib.sha256(msgid.encode()).digest()[0] < 128 else "test"


def _load(path: Path) -> Any:
    """One catalogue, ``.po`` / ``.pot`` source or compiled ``.mo``, as polib entries."""
    import polib

    try:
        return polib.mofile(str(path)) if path.suffix == ".mo" else polib.pofile(str(path))
    except (OSError, ValueError) as e:
        raise EncoderError(f"{path} is not a readable gettext catalogue: {e}") from e


def read_catalogues(root: Path, lang: str) -> dict[str, str]:
    """English → translation for every usable entry of ``lang``'s catalogues under ``root``."""
    pairs: dict[str, str] = {}
    files = sorted(root.glob(f"**/locale/{lang}/LC_MESSAGES/*.po"))
    files = files or sorted(root.glob(f"**/{lang}/LC_MESSAGES/*.po"))
    for path in files:
        for entry in _load(path):
            skip = entry.obsolete or "fuzzy" in entry.flags or entry.msgid_plural
            msgid, msgstr = entry.msgid.strip(), entry.msgstr.strip()
            if skip or not msgstr or not usable_msgid(msgid):
                continue
            pairs.setdefault(msgid, msgstr)
    return pairs


def catalogue_files(root: Path) -> list[Path]:
    """One file per catalogue under ``root`` (a catalogue: a template ``<dir>/<domain>.pot``
    and its translations ``<dir>/<lang>/LC_MESSAGES/<domain>.po|.mo``): the template where one
    is shipped, else the largest translation, since every ``.po`` lists all of its catalogue's
    msgids but a ``.mo`` only the translated ones."""
    best: dict[tuple[Path, str], Path] = {}
    for path in sorted(root.rglob("*.pot")):
        best[(path.parent, path.stem)] = path
    for path in sorted(root.glob("**/LC_MESSAGES/*")):
        key = (path.parents[2], path.stem)
        if path.suffix not in (".po", ".mo") or best.get(key, path).suffix == ".pot":
            continue
        if key not in best or path.stat().st_size > best[key].stat().st_size:
            best[key] = path
    return [best[k] for k in sorted(best)]


def catalogue_msgids(root: Path) -> list[str]:
    """The usable English msgids of every catalogue under ``root``, once each, in file order
    (translated or not: the English side is what is read)."""
    seen: dict[str, None] = {}
    for path in catalogue_files(root):
        for entry in _load(path):
            msgid = entry.msgid.strip()
            if not entry.obsolete and usable_msgid(msgid):
                seen.setdefault(msgid, None)
    return list(seen)


def read_gettext(
    root: str | Path, split: str, langs: Sequence[str], limit: int | None = None
) -> dict[str, list[str]]:
    """English plus ``langs`` as aligned lists, "en" first (entries every language translates)."""
    root = Path(root)
    if split not in SPLITS:
        raise EncoderError(f"gettext split must be one of {SPLITS}, got {split!r}")
    langs = [lang for lang in dict.fromkeys(langs) if lang and lang != "en"]
    if not langs:
        raise EncoderError("gettext data needs at least one language other than en")
    per_lang = {}
    for lang in langs:
        per_lang[lang] = read_catalogues(root, lang)
        if not per_lang[lang]:
            raise EncoderError(f"{root}: no usable {lang!r} catalogue (*/{lang}/LC_MESSAGES/*.po)")
    common = [
        msgid
        for msgid in per_lang[langs[0]]
        if all(msgid in d and d[msgid] != msgid for d in per_lang.values())
        and (split == "all" or _split_of(msgid) == split)
    ]
    common.sort()
    if not common:
        raise EncoderError(f"{root}: no entry that {', '.join(langs)} all translate ({split})")
    common = common[:limit] if limit else common
    return {"en": common, **{lang: [per_lang[lang][m] for m in common] for lang in langs}}
