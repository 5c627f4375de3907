"""The one reader of line-aligned caption files (Multi30k layout), shared by all stages."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from polyclip.encoders.captions import CaptionsError, read_parallel
from polyclip.encoders.errors import EncoderError


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """en and de gzipped (de with a BOM), fr plain with CRLF; a blank line, stray whitespace."""
    write(tmp_path / "val.en.gz", b"a dog\n  a cat \n\na man\n")
    write(tmp_path / "val.de.gz", "\ufeffein Hund\neine Katze läuft\n\nein Mann\n".encode())
    write(tmp_path / "val.fr", "un chien\r\nun chat\r\n \r\nun homme élégant\r\n".encode())
    return tmp_path


def test_gz_and_plain_stay_aligned_with_blank_lines(data_dir: Path) -> None:
    data = read_parallel(data_dir, "val", ["de", "fr", "de", "en", ""])
    assert list(data) == ["en", "de", "fr"]
    assert data["en"] == ["a dog", "a cat", "", "a man"]
    assert data["de"] == ["ein Hund", "eine Katze läuft", "", "ein Mann"]
    assert data["fr"] == ["un chien", "un chat", "", "un homme élégant"]
    assert read_parallel(str(data_dir), "val", []) == {"en": data["en"]}


def test_limit_keeps_the_first_captions(data_dir: Path) -> None:
    data = read_parallel(data_dir, "val", ["de", "fr"], limit=2)
    assert data == {
        "en": ["a dog", "a cat"],
        "de": ["ein Hund", "eine Katze läuft"],
        "fr": ["un chien", "un chat"],
    }
    assert read_parallel(data_dir, "val", ["de"], limit=99)["de"][-1] == "ein Mann"
    with pytest.raises(CaptionsError, match="at least 1, got 0"):
        read_parallel(data_dir, "val", ["de"], limit=0)


def test_misaligned_names_both_files_and_counts(data_dir: Path) -> None:
    write(data_dir / "val.cs", b"pes\nkocka\n")
    with pytest.raises(CaptionsError, match=r"val\.cs:3: 2 lines, but .*val\.en\.gz has 4"):
        read_parallel(data_dir, "val", ["de", "cs"], limit=2)  # checked on the whole files


def test_missing_file_is_named(data_dir: Path) -> None:
    with pytest.raises(CaptionsError, match=r"no val\.cs\.gz or val\.cs"):
        read_parallel(data_dir, "val", ["de", "cs"])
    with pytest.raises(CaptionsError, match=r"no test\.en\.gz or test\.en"):
        read_parallel(data_dir, "test", ["de"])


def test_bad_utf8_names_file_and_line(data_dir: Path) -> None:
    write(data_dir / "val.cs.gz", b"pes\n\xff\xfe\nmuz\nzena\n")
    with pytest.raises(CaptionsError, match=r"val\.cs\.gz:2: not UTF-8"):
        read_parallel(data_dir, "val", ["cs"])


def test_empty_and_corrupt_files(data_dir: Path) -> None:
    write(data_dir / "test.en", b"")
    with pytest.raises(CaptionsError, match=r"test\.en: no captions"):
        read_parallel(data_dir, "test", ["de"])
    (data_dir / "bad.en.gz").write_bytes(b"not gzip at all")
    with pytest.raises(CaptionsError, match=r"bad\.en\.gz: unreadable after line 0"):
        read_parallel(data_dir, "bad", [])
    assert issubclass(CaptionsError, EncoderError)  # the CLI turns it into exit 2
