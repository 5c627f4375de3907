"""``polyclip export bench`` on tiny models with small counts: every file, every CPU row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from polyclip.__main__ import main

CPU_ROWS = {"PyTorch fp32", "ONNX fp32", "ONNX int8"}


def test_bench_writes_json_markdown_and_chart(
    tmp_path: Path, st_teacher_dir: Path, student_dir: Path, val_dir: Path
) -> None:
    out = tmp_path / "speed"
    argv = ["export", "bench", "--teacher", str(st_teacher_dir), "--student", str(student_dir)]
    argv += ["--data", str(val_dir), "--out", str(out), "--quality-langs", "de,fr"]
    argv += ["--captions", "8", "--latency-captions", "3", "--passes", "2", "--batch-size", "4"]
    argv += ["--threads", "1"]  # tiny models: one thread, no contention with other test jobs
    assert main(argv) == 0
    report = json.loads((out / "speed.json").read_text())
    rows = {(r["model"], r["backend"]): r for r in report["rows"]}
    assert set(rows) == {(m, b) for m in ("teacher", "student") for b in CPU_ROWS}
    base = rows[("teacher", "PyTorch fp32")]
    assert base["speedup_vs_teacher_pytorch_fp32"] == pytest.approx(1.0)
    for r in rows.values():
        assert len(r["throughput"]["passes"]) == 2 and r["latency_ms"]["n"] == 6
        assert r["latency_ms"]["p50"] <= r["latency_ms"]["p95"]
        assert set(r["r1"]) == {"de", "fr", "mean"}
    student = rows[("student", "PyTorch fp32")]
    assert (student["params_total"], student["params_non_embedding"]) > (0, 0)
    assert student["params_non_embedding"] < student["params_total"]
    assert rows[("student", "ONNX fp32")]["r1_delta_vs_pytorch_fp32"] == pytest.approx(0, abs=5)
    assert "student_int8_vs_student_pytorch" in report["targets"]
    assert set(report["targets"]["student_vs_teacher_same_backend"]) == CPU_ROWS
    assert report["machine"]["cpu"] and report["machine"]["versions"]["onnxruntime"]
    if not torch.cuda.is_available():
        assert any("no CUDA GPU" in n and "not estimated" in n for n in report["notes"])
    md = (out / "speed.md").read_text()
    assert "| student | ONNX int8 |" in md and "target student ONNX int8" in md
    with Image.open(out / "speed.png") as png:
        assert png.format == "PNG" and png.width > 100
