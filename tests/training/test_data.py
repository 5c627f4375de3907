"""Pair readers (aligned, TSV/CSV, JSONL), their counts and errors, batching and the DR queue."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from polyclip.encoders.errors import EncoderError
from polyclip.training.data import (
    BatchStream,
    DataError,
    Pair,
    default_data_dir,
    queue_anchors,
    read_keys,
    read_pairs,
    token_lengths,
)
from tests.captions import captions, write_lines
from tests.tiny import word_tokenizer


def test_aligned_mixes_languages_gzip_and_plain(tmp_path: Path) -> None:
    caps = captions(6)
    write_lines(tmp_path / "train.en.gz", caps["en"])
    write_lines(tmp_path / "train.de.gz", caps["de"])
    write_lines(tmp_path / "train.fr", caps["fr"])  # plain text works too
    pairs, stats = read_pairs(tmp_path, "train", ["de", "fr"])
    assert len(pairs) == 12 and {p.lang for p in pairs} == {"de", "fr"}
    assert pairs[0] == Pair(caps["en"][0], caps["de"][0], "de")
    assert pairs[6] == Pair(caps["en"][0], caps["fr"][0], "fr")
    assert stats.as_dict()["pairs"] == {"de": 6, "fr": 6}
    limited, _ = read_pairs(tmp_path, "train", ["de", "fr"], limit=2)
    assert [p.lang for p in limited] == ["de", "de", "fr", "fr"]


def test_aligned_errors_name_the_file(tmp_path: Path) -> None:
    write_lines(tmp_path / "train.en.gz", ["a dog", "a cat", "a man"])
    write_lines(tmp_path / "train.de.gz", ["ein hund", "eine katze"])
    # line-aligned files are read by polyclip.encoders.captions, whose errors are EncoderErrors
    with pytest.raises(EncoderError, match=r"train\.de\.gz:3: 2 lines, but .*train\.en\.gz has 3"):
        read_pairs(tmp_path, "train", ["de"])
    with pytest.raises(EncoderError, match=r"no train\.cs\.gz or train\.cs"):
        read_pairs(tmp_path, "train", ["cs"])
    with pytest.raises(DataError, match="no 'val' split"):
        read_pairs(tmp_path, "val", ["de"])


def test_empty_dropped_identical_kept_and_counted(tmp_path: Path) -> None:
    write_lines(tmp_path / "train.en", ["a dog", "", "paris", "a cat"])
    write_lines(tmp_path / "train.de", ["ein hund", "ein mann", "paris", "  "])
    pairs, stats = read_pairs(tmp_path, "train", ["de"])
    assert [p.text for p in pairs] == ["ein hund", "paris"]
    assert stats.dropped_empty == 2 and stats.identical == 1


@pytest.mark.parametrize("suffix", [".tsv", ".csv.gz"])
def test_table_long_and_wide(tmp_path: Path, suffix: str) -> None:
    sep = "\t" if suffix == ".tsv" else ","
    long = [sep.join(r) for r in [("en", "text", "lang"), ("a dog", "ein hund", "de"),
                                  ("a cat", "un chat", "fr"), ("a man", "muž", "cs")]]  # fmt: skip
    pairs, _ = read_pairs(write_lines(tmp_path / f"long{suffix}", long), "train", ["de", "fr"])
    assert pairs == [Pair("a dog", "ein hund", "de"), Pair("a cat", "un chat", "fr")]
    wide = [sep.join(r) for r in [("en", "de", "fr"), ("a dog", "ein hund", "un chien")]]
    pairs, _ = read_pairs(write_lines(tmp_path / f"wide{suffix}", wide), "train", None)
    assert pairs == [Pair("a dog", "ein hund", "de"), Pair("a dog", "un chien", "fr")]


def test_csv_quoting_and_relative_images(tmp_path: Path) -> None:
    rows = ["en,de,image", '"a dog, running",ein hund,img/1.png']
    pairs, _ = read_pairs(write_lines(tmp_path / "d.csv", rows), "train", ["de"])
    assert pairs == [Pair("a dog, running", "ein hund", "de", str(tmp_path / "img/1.png"))]


def test_jsonl_long_wide_and_split_lookup(tmp_path: Path) -> None:
    rows = [{"en": "a dog", "text": "ein hund", "lang": "de"}, {"en": "a cat", "fr": "un chat"}]
    write_lines(tmp_path / "train.jsonl", [json.dumps(r, ensure_ascii=False) for r in rows[:1]])
    pairs, _ = read_pairs(tmp_path, "train", ["de"])  # a directory with {split}.jsonl
    assert pairs == [Pair("a dog", "ein hund", "de")]
    wide = write_lines(tmp_path / "w.jsonl.gz", [json.dumps(rows[1]), ""])
    assert read_pairs(wide, "x", ["fr"])[0] == [Pair("a cat", "un chat", "fr")]


@pytest.mark.parametrize(
    ("name", "lines", "message"),
    [
        ("bad.jsonl", ['{"en": "a", "de": "b"}', "{not json"], r"bad\.jsonl:2: not valid JSON"),
        ("bad.jsonl", ['["a list"]'], r"bad\.jsonl:1: expected a JSON object"),
        ("bad.jsonl", ['{"de": "b"}'], r"bad\.jsonl:1: missing the English anchor"),
        ("bad.jsonl", ['{"en": "a", "de": 3}'], r"bad\.jsonl:1: field 'de' must be a string"),
        ("bad.jsonl", ['{"en": "a", "text": "b"}'], r"bad\.jsonl:1: .* non-empty 'lang'"),
        ("bad.tsv", ["en\tde", "a\tb", "a\tb\tc"], r"bad\.tsv:3: 3 fields, the header has 2"),
        ("bad.tsv", ["de\tfr", "a\tb"], r"bad\.tsv:1: header needs an 'en' column"),
        ("bad.tsv", ["en\tfr", "a\tb"], r"bad\.tsv:2: no column for language\(s\) \['de'\]"),
        ("bad.txt", ["a"], r"unknown data format"),
    ],
)
def test_malformed_input_names_file_and_line(
    tmp_path: Path, name: str, lines: list[str], message: str
) -> None:
    with pytest.raises(DataError, match=message):
        read_pairs(write_lines(tmp_path / name, lines), "train", ["de"])


def test_undecodable_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "train.en").write_bytes(b"a dog\na cat\n")
    (tmp_path / "train.de").write_bytes(b"ein hund\n\xff\xfe\n")
    with pytest.raises(EncoderError, match=r"train\.de:2: not UTF-8"):
        read_pairs(tmp_path, "train", ["de"])
    with pytest.raises(DataError, match="data not found"):
        read_pairs(tmp_path / "nope.tsv", "train", ["de"])


def test_default_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "main"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("POLYCLIP_DATA", "/somewhere")
    assert default_data_dir() == Path("/somewhere")
    monkeypatch.delenv("POLYCLIP_DATA")
    with pytest.raises(DataError, match="pass --data"):
        default_data_dir()
    (tmp_path / "shared/data/multi30k").mkdir(parents=True)
    assert default_data_dir() == Path("../shared/data/multi30k")
    (work / "data/multi30k").mkdir(parents=True)
    assert default_data_dir() == Path("data/multi30k")


def test_batch_stream_epochs_and_resume() -> None:
    stream = BatchStream(size=10, batch_size=3, seed=1)
    first = [stream.next() for _ in range(3)]
    assert stream.epoch_done and len(np.unique(np.concatenate(first))) == 9
    state = stream.state_dict()
    nxt = [stream.next() for _ in range(4)]
    assert stream.epoch == 2 and stream.progress == pytest.approx(2 + 1 / 3, abs=1e-3)
    again = BatchStream(size=10, batch_size=3, seed=1)
    again.load_state_dict(state)
    assert all(
        np.array_equal(a, b) for a, b in zip(nxt, [again.next() for _ in range(4)], strict=True)
    )
    assert not np.array_equal(first[0], nxt[0])  # a new permutation each epoch
    with pytest.raises(DataError, match="less than one batch"):
        BatchStream(size=2, batch_size=3, seed=0)


def test_batch_stream_groups_by_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pair once per epoch, batches of similar length, shuffled, resumable."""
    monkeypatch.setattr(BatchStream, "GROUP", 4)
    lengths = np.random.default_rng(0).integers(5, 60, size=130)
    stream = BatchStream(size=130, batch_size=8, seed=2, lengths=lengths)
    epoch = [stream.next() for _ in range(stream.steps_per_epoch)]
    assert len(np.unique(np.concatenate(epoch))) == 16 * 8
    padded = sum(lengths[b].max() * len(b) for b in epoch)
    plain = BatchStream(size=130, batch_size=8, seed=2)
    padded_plain = sum(lengths[plain.next()].max() * 8 for _ in range(16))
    assert padded < 0.8 * padded_plain
    maxima = [lengths[b].max() for b in epoch]
    assert maxima != sorted(maxima, reverse=True)  # the batches themselves are shuffled
    state = stream.state_dict()
    nxt = [stream.next() for _ in range(3)]
    again = BatchStream(size=130, batch_size=8, seed=2, lengths=lengths)
    again.load_state_dict(state)
    assert all(np.array_equal(a, again.next()) for a in nxt)
    assert not any(np.array_equal(a, b) for a, b in zip(epoch, nxt, strict=False))


def test_queue_anchors(tmp_path: Path) -> None:
    keys = [f"s{i % 7}" for i in range(20)]
    drawn = queue_anchors(keys, 5, seed=3)
    assert len(set(drawn)) == 5 and set(drawn) <= set(keys)
    assert drawn == queue_anchors(keys, 5, seed=3) != queue_anchors(keys, 5, seed=4)
    with pytest.raises(DataError, match="queue_size=8 distinct anchors but the training data"):
        queue_anchors(keys, 8, seed=0)
    extra = write_lines(tmp_path / "q.txt.gz", ["x", "y", "", "x", "z"])
    assert read_keys(extra) == ["x", "y", "z"]
    assert queue_anchors(keys, 2, seed=0, queue_data=str(extra)) == ["x", "y"]


def test_token_lengths_are_untruncated() -> None:
    texts = ["a dog", "a dog runs in the park with two red cat"]
    lengths = token_lengths(texts, word_tokenizer())
    assert lengths.tolist() == [len(word_tokenizer()(t)["input_ids"]) for t in texts]
    assert lengths[1] > 6
