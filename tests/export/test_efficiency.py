"""Serving efficiency: a bundle's in-process CPU per text against a load report's server CPU,
and the onnxruntime spin setting both sides read from bundle.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polyclip.__main__ import main
from polyclip.encoders.captions import texts_sha256
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.onnx_bundle import CPU, RuntimeOptions, load_bundle, open_session
from polyclip.export.efficiency import EfficiencyConfig, run_efficiency
from tests.captions import captions

TEXTS = captions(24)["de"]


def load_report(levels: list[tuple[int, int, float | None]], texts: list[str]) -> dict:
    """The part of a `polyclip bench load` report (load.json) efficiency reads."""
    return {
        "kind": "load",
        "started_at": "2026-12-01T00:00:00+0000",
        "config": {"model": "student"},
        "texts": {"file": "t.txt", "count": len(texts), "sha256": texts_sha256(texts)},
        "levels": [
            {"batch": b, "concurrency": c, "server_cpu_s_per_1k_items": cpu, "items_per_s": 50.0}
            for b, c, cpu in levels
        ],
    }


def test_efficiency_divides_inprocess_by_server_cpu(student_bundle: Path) -> None:
    report = load_report([(1, 16, 2.0), (32, 16, 1.0), (1, 1, 50.0), (4, 2, None)], TEXTS)
    result = run_efficiency(EfficiencyConfig(student_bundle, TEXTS, report, min_texts=64))
    rows = {(r["batch"], r["concurrency"]): r for r in result["rows"]}
    assert set(rows) == {(1, 16), (32, 16), (1, 1)}  # no server CPU: no row
    assert rows[(1, 16)]["inprocess_batch"] == 16 and rows[(32, 16)]["inprocess_batch"] == 32
    assert rows[(1, 1)]["inprocess_batch"] == 1
    for r in rows.values():
        assert r["inprocess_cpu_s_per_1k"] > 0
        want = r["inprocess_cpu_s_per_1k"] / r["server_cpu_s_per_1k"]
        assert r["efficiency"] == pytest.approx(want, abs=1e-3)
    assert rows[(1, 16)]["target"] == 0.85 and rows[(32, 16)]["target"] == 0.95
    assert rows[(1, 1)]["target"] is None and rows[(1, 1)]["met"] is None
    assert result["runtime"] == json.loads((student_bundle / "bundle.json").read_text())["runtime"]


def test_efficiency_needs_the_texts_the_load_run_sent(student_bundle: Path) -> None:
    report = load_report([(1, 1, 1.0)], TEXTS)
    with pytest.raises(EncoderError, match="not the texts the load run sent"):
        run_efficiency(EfficiencyConfig(student_bundle, TEXTS[:-1], report))
    with pytest.raises(EncoderError, match="no server CPU"):
        run_efficiency(EfficiencyConfig(student_bundle, TEXTS, load_report([(1, 1, None)], TEXTS)))
    with pytest.raises(EncoderError, match="bench load"):
        run_efficiency(EfficiencyConfig(student_bundle, TEXTS, {"kind": "quality"}))


def test_efficiency_cli_writes_the_report(student_bundle: Path, tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    (tmp_path / "load.json").write_text(json.dumps(load_report([(32, 16, 0.5)], TEXTS)))
    argv = ["export", "efficiency", "--bundle", str(student_bundle), "--texts", str(texts)]
    argv += ["--load", str(tmp_path / "load.json"), "--min-texts", "64", "--out", str(tmp_path)]
    assert main(argv) == 0
    data = json.loads((tmp_path / "efficiency.json").read_text())
    assert [(r["batch"], r["concurrency"]) for r in data["rows"]] == [(32, 16)]
    assert "| 32 × 16 |" in (tmp_path / "efficiency.md").read_text()
    assert (tmp_path / "efficiency.png").read_bytes()[:4] == b"\x89PNG"


def test_spinning_is_a_bundle_runtime_setting(student_bundle: Path) -> None:
    for spin, entry in ((True, "1"), (False, "0")):
        session = open_session(
            student_bundle / "model.onnx", [CPU], RuntimeOptions(allow_spinning=spin)
        )
        options = session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == entry
    text, _ = load_bundle(student_bundle, allow_spinning=False)
    assert text.graph.runtime.allow_spinning is False
    assert json.loads((student_bundle / "bundle.json").read_text())["runtime"]["allow_spinning"]


def test_compare_puts_bundles_side_by_side(
    student_bundle: Path, student_dir: Path, val_dir: Path, tmp_path: Path
) -> None:
    int8 = tmp_path / "int8"
    assert main(["export", "--model", str(student_dir), "--out", str(int8),
                 "--precision", "int8"]) == 0  # fmt: skip
    argv = ["export", "compare", str(student_bundle), str(int8), "--data", str(val_dir),
            "--captions", "16", "--passes", "2", "--batch-size", "8"]  # fmt: skip
    argv += ["--out", str(tmp_path / "c")]
    assert main(argv) == 0
    rows = json.loads((tmp_path / "c/compare.json").read_text())["rows"]
    assert [r["precision"] for r in rows] == ["fp32", "int8"]
    assert rows[0]["gate"] == 0.999 and rows[1]["gate"] == 0.98
    assert rows[1]["conversion"]["int8_matmuls"] > 0 and all(r["passes"] for r in rows)
    assert all(r["captions_per_s"] > 0 for r in rows)
    assert "| int8 | int8 | dynamic |" in (tmp_path / "c/compare.md").read_text()
