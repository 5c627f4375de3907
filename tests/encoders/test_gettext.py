"""The gettext reader: what it keeps, what it drops, and splits that never overlap."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyclip.encoders.errors import EncoderError
from polyclip.encoders.gettext import (
    catalogue_files,
    catalogue_msgids,
    is_gettext_dir,
    read_catalogues,
    read_gettext,
)
from tests.captions import PO_ENTRIES as ENTRIES
from tests.captions import write_po


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for lang in ("de", "fr"):
        write_po(tmp_path, lang)
    return tmp_path


def test_keeps_translated_sentences_only(root: Path) -> None:
    assert is_gettext_dir(root) and not is_gettext_dir(root / "nowhere")
    assert read_catalogues(root, "de") == ENTRIES["de"]


def test_aligned_on_entries_every_language_translates_and_splits_are_disjoint(root: Path) -> None:
    data = read_gettext(root, "all", ["de", "fr"])
    assert list(data) == ["en", "de", "fr"]
    assert "Go back home" not in data["en"]  # French left it in English
    assert len(data["en"]) == 5
    for i, msgid in enumerate(data["en"]):
        assert data["de"][i] == ENTRIES["de"][msgid] and data["fr"][i] == ENTRIES["fr"][msgid]
    val, test = (set(read_gettext(root, s, ["de", "fr"])["en"]) for s in ("val", "test"))
    assert val | test == set(data["en"]) and not val & test
    assert read_gettext(root, "all", ["de"], limit=2)["en"] == sorted(ENTRIES["de"])[:2]


def test_errors_name_what_is_missing(root: Path) -> None:
    with pytest.raises(EncoderError, match="no usable 'cs' catalogue"):
        read_gettext(root, "all", ["de", "cs"])
    with pytest.raises(EncoderError, match="split must be one of"):
        read_gettext(root, "train", ["de"])


def test_catalogue_msgids_read_one_file_per_catalogue(root: Path, tmp_path: Path) -> None:
    import polib

    data = read_gettext(root, "all", ["de"])
    for lang in ("de", "fr"):  # a second catalogue, compiled: only its translated entries
        out = tmp_path / "ui" / "locale" / lang / "LC_MESSAGES"
        out.mkdir(parents=True)
        po = polib.POFile()
        po.append(polib.POEntry(msgid="Open a notebook", msgstr=f"{lang}: notebook"))
        if lang == "fr":
            po.append(polib.POEntry(msgid="Close", msgstr="Fermer"))
        po.save_as_mofile(str(out / "app.mo"))
    files = catalogue_files(tmp_path)
    assert [p.relative_to(tmp_path).parts[:4] for p in files] == [
        ("core", "locale", "de", "LC_MESSAGES"),  # the larger .po (every .po lists all msgids)
        ("ui", "locale", "fr", "LC_MESSAGES"),  # the larger .mo: more msgids
    ]
    got = catalogue_msgids(tmp_path)
    # untranslated and fuzzy entries still give their English; placeholders and "OK" do not
    assert set(data["en"]) < set(got) and {"Not translated yet", "A fuzzy entry"} < set(got)
    assert set(got[-2:]) == {"Open a notebook", "Close"} and "OK" not in got
    (tmp_path / "ui" / "locale" / "app.pot").write_text(
        'msgid ""\nmsgstr ""\n\nmsgid "Only in the template"\nmsgstr ""\n', encoding="utf-8"
    )
    assert catalogue_msgids(tmp_path / "ui") == ["Only in the template"]  # the template wins
