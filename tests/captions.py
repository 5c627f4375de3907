"""Toy parallel captions in the tiny tokenizer's vocabulary (tests/tiny.py), on disk as Multi30k
lays them out: ``{split}.{lang}.gz``, line i of every language is caption i."""

from __future__ import annotations

import gzip
from itertools import product
from pathlib import Path

import numpy as np

# Training captions: en, de, fr; every combination is distinct.
SUBJECTS = [("dog", "hund", "chien"), ("cat", "katze", "chat"), ("man", "mann", "homme"),
            ("woman", "frau", "femme"), ("child", "kind", "enfant")]  # fmt: skip
COUNTS = [("a", "ein", "un"), ("two", "zwei", "deux")]
COLOURS = [("red", "rot", "rouge"), ("blue", "blau", "bleu")]
VERBS = [("runs", "läuft", "court"), ("sits", "sitzt", "marche")]
PLACES = [("in the park", "im park", "parc"), ("on the water", "auf wasser", "eau")]


def captions(n: int, offset: int = 0) -> dict[str, list[str]]:
    """``n`` distinct parallel captions per language (en, de, fr); at most 80."""
    combos = list(product(COUNTS, COLOURS, SUBJECTS, VERBS, PLACES))[offset : offset + n]
    assert len(combos) == n, "not enough distinct toy captions"
    langs = ("en", "de", "fr")
    return {lang: [" ".join(part[i] for part in combo) for combo in combos]
            for i, lang in enumerate(langs)}  # fmt: skip


def write_lines(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_aligned(directory: Path, splits: dict[str, tuple[int, int]]) -> Path:
    """Multi30k layout: ``{split}.{lang}.gz``; ``splits`` maps split → (n captions, offset)."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, (n, offset) in splits.items():
        for lang, lines in captions(n, offset).items():
            write_lines(directory / f"{split}.{lang}.gz", lines)
    return directory


# Validation captions: en, de, fr, cs (cs: German words without articles).
_VAL_SUBJECTS = [("dog", "hund", "chien"), ("cat", "katze", "chat"), ("man", "mann", "homme"),
             ("woman", "frau", "femme"), ("child", "kind", "enfant")]  # fmt: skip
_VAL_VERBS = [("runs", "läuft", "court"), ("walks", "läuft", "marche"), ("sits", "sitzt", "court")]
_VAL_PLACES = [("in the park", "im park", "parc"), ("on the street", "auf der", "rue"),
           ("in the water", "im wasser", "eau")]  # fmt: skip
_VAL_COLOURS = [("red", "rot", "rouge"), ("blue", "blau", "bleu"), ("two", "zwei", "deux")]
_VAL_PARTS = (_VAL_SUBJECTS, _VAL_VERBS, _VAL_PLACES, _VAL_COLOURS)


def write_val(out: Path, n: int = 24, seed: int = 0) -> Path:
    """``val.{en,de,fr,cs}.gz`` with ``n`` aligned captions; Czech reuses German words."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[str]] = {"en": [], "de": [], "fr": [], "cs": []}
    for _ in range(n):
        s, v, p, c = (x[rng.integers(len(x))] for x in _VAL_PARTS)
        rows["en"].append(f"a {c[0]} {s[0]} {v[0]} {p[0]}")
        rows["de"].append(f"ein {c[1]} {s[1]} {v[1]} {p[1]}")
        rows["fr"].append(f"un {c[2]} {s[2]} {v[2]} {p[2]}")
        rows["cs"].append(f"{s[1]} {p[1]}")
    out.mkdir(parents=True, exist_ok=True)
    for lang, lines in rows.items():
        with gzip.open(out / f"val.{lang}.gz", "wt", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return out


# gettext catalogues, as Django ships them: English msgid → msgstr.
HEADER = 'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
PO_ENTRIES = {
    "de": {"Save the file": "Datei speichern", "Delete all users": "Alle Benutzer löschen",
           "Clear all filters": "Alle Filter zurücksetzen", "Show the password": "Passwort zeigen",
           "Model documentation": "Modelldokumentation", "Go back home": "Zurück nach Hause"},
    "fr": {"Save the file": "Enregistrer le fichier", "Delete all users": "Supprimer tous",
           "Clear all filters": "Effacer les filtres", "Show the password": "Afficher",
           "Model documentation": "Documentation", "Go back home": "Go back home"},
}  # fmt: skip


def write_po(root: Path, lang: str, app: str = "core") -> None:
    """``root/<app>/locale/<lang>/LC_MESSAGES/django.po``: the entries plus every kind the
    reader must drop (fuzzy, empty, placeholder-only, one short token, plural, obsolete)."""
    out = root / app / "locale" / lang / "LC_MESSAGES"
    out.mkdir(parents=True, exist_ok=True)
    body = HEADER
    for msgid, msgstr in PO_ENTRIES[lang].items():
        body += f'msgid "{msgid}"\nmsgstr "{msgstr}"\n\n'
    body += '#, fuzzy\nmsgid "A fuzzy entry"\nmsgstr "Ein unscharfer Eintrag"\n\n'
    body += 'msgid "Not translated yet"\nmsgstr ""\n\n'
    body += 'msgid "%(value)s"\nmsgstr "%(value)s"\n\n'  # placeholder-only
    body += 'msgid "{name} …"\nmsgstr "{name} …"\n\n'
    body += 'msgid "OK"\nmsgstr "Gut"\n\n'  # one short token
    body += 'msgid "%(count)s file"\nmsgid_plural "%(count)s files"\n'
    body += 'msgstr[0] "%(count)s Datei"\nmsgstr[1] "%(count)s Dateien"\n\n'
    body += '#~ msgid "An obsolete entry"\n#~ msgstr "Veraltet"\n'
    (out / "django.po").write_text(body, encoding="utf-8")
