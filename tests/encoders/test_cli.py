"""``polyclip encode``: one JSON unit vector per line, clear errors and exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from polyclip.__main__ import main
from polyclip.encoders.argtypes import str_list
from tests.images import random_image


def _rows(out: str) -> np.ndarray:
    return np.array([json.loads(line) for line in out.strip().splitlines()])


def test_encode_texts_file_and_images(
    tmp_path: Path, clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "in.txt"
    f.write_text("a dog\nein hund\n", encoding="utf-8")
    img = tmp_path / "x.png"

    random_image(0).save(img)
    argv = ["encode", "--model", str(clip_dir), "a cat", "--file", str(f), "--image", str(img)]
    assert main(argv) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)


def test_prefix_flag(xlmr_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["encode", "--model", str(xlmr_dir), "query: a dog"])
    plain = _rows(capsys.readouterr().out)
    main(["encode", "--model", str(xlmr_dir), "--prefix", "query", "a dog"])
    prefixed = _rows(capsys.readouterr().out)
    assert not np.allclose(plain, prefixed)  # the bare dir has no prefixes: nothing is prepended


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["encode", "--model", "/no/such/dir", "x"], "not found"),
        (["encode", "--model", "{xlmr}"], "nothing to encode"),
        (["encode", "--model", "{xlmr}", "--image", "a.png"], "no image tower"),
        (["encode", "--model", "{xlmr}", "--file", "/no/file.txt"], "cannot read"),
    ],
)
def test_errors_are_one_line_and_exit_2(
    argv: list[str], message: str, xlmr_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.replace("{xlmr}", str(xlmr_dir)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_list_flags_refuse_empty_lists(capsys: pytest.CaptureFixture[str]) -> None:
    assert str_list(" de, fr ,,cs ") == ["de", "fr", "cs"]
    with pytest.raises(argparse.ArgumentTypeError):
        str_list(" , ")
    with pytest.raises(SystemExit) as exc:  # every command that takes languages shares the type
        main(["eval", "--teacher", "x", "--langs", ","])
    assert exc.value.code == 2 and "comma-separated list" in capsys.readouterr().err
