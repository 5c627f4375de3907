"""`polyclip train bench` on the tiny student: four settings, one report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polyclip.__main__ import main
from tests.captions import write_aligned

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_train_step_report(xlmr_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_aligned(tmp_path / "data", {"train": (40, 0)})
    out = tmp_path / "out"
    argv = ["train", "bench", "--student", str(xlmr_dir), "--data", str(data), "--langs",
            "de,fr", "--batch-size", "8", "--steps", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "train_step.json").read_text())
    rows = {(r["precision"], r["group_by_length"]): r for r in report["rows"]}
    assert set(rows) == {("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)}
    assert rows["fp32", False]["speedup"] == 1.0
    assert all(r["s_per_step"] > 0 and r["pairs_per_s"] > 0 for r in rows.values())
    for precision in ("fp32", "bf16"):  # grouping never pads more than random batches
        assert rows[precision, True]["tokens_per_step"] <= rows[precision, False]["tokens_per_step"]
    assert report["config"]["pairs"] == 80
    assert (out / "train_step.png").stat().st_size > 0
    assert "| bf16 | yes |" in capsys.readouterr().out
