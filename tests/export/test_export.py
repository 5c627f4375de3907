"""``polyclip export``: tiny students, teachers and dual encoders to bundles that match PyTorch."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from polyclip.__main__ import main
from polyclip.encoders import EncoderError, load_encoders, load_text_encoder
from polyclip.encoders.base import TextEncoder, l2_normalize
from polyclip.encoders.onnx_bundle import (
    OnnxImageEncoder,
    OnnxTextEncoder,
    load_bundle,
    read_bundle,
)
from polyclip.encoders.sentence import SentenceEncoder, pool
from polyclip.export.bundle import ExportOptions, export_bundle
from polyclip.export.onnx_export import random_images
from polyclip.export.parity import THRESHOLDS
from tests.captions import write_aligned
from tests.tiny import save_student

# Seven texts (batch 7), short to long; the last one is truncated at max_seq_length.
TEXTS = [
    "a dog",
    "ein hund läuft im park",
    "un chat rouge",
    "the man sits on the red street in the park with two blue cats",
    "x",
    "zwei katze",
    " ".join(["the red dog runs in the park"] * 8),
]


def _min_cos(a: TextEncoder, b: TextEncoder, texts: list[str] = TEXTS) -> float:
    x, y = a.encode(texts, prefix="query"), b.encode(texts, prefix="query")
    assert x.shape == y.shape
    return float(np.sum(x * y, axis=1).min())


def _output_width(model: Path) -> int:
    return onnx.load(str(model)).graph.output[0].type.tensor_type.shape.dim[1].dim_value


# Every backbone with a linear head at fp32 and a tanh head at int8 (paired to stay fast).
@pytest.mark.parametrize(("head", "precision"), [("linear", "fp32"), ("tanh", "int8")])
def test_student_bundle_matches_torch(
    tmp_path: Path, backbone_dir: Path, head: str, precision: str
) -> None:
    src = save_student(backbone_dir, tmp_path / "src", head)
    meta = export_bundle(src, tmp_path / "bundle", ExportOptions(precision))
    bundle, ref = load_text_encoder(tmp_path / "bundle"), load_text_encoder(src)
    assert isinstance(bundle, OnnxTextEncoder)
    assert bundle.info == ref.info  # name, dimension, max length, prefixes, space
    assert _min_cos(bundle, ref) >= THRESHOLDS[precision]
    assert meta["parity"]["passed"] and meta["precision"] == precision
    assert meta["card"]["space"] == meta["space"] == "tiny-teacher"
    assert meta["towers"]["text"]["fused_ops"].get("Attention") == 2  # 2 layers fused
    assert json.loads((tmp_path / "bundle" / "bundle.json").read_text()) == meta


def test_fp16_bundle_runs_on_the_cpu(tmp_path: Path, student_dir: Path) -> None:
    # onnxruntime's CPU provider runs the fp16 graph (casts around what it lacks), so the fp16
    # path is tested for real here, not only converted.
    export_bundle(student_dir, tmp_path / "b", ExportOptions("fp16"))
    graph = onnx.load(str(tmp_path / "b" / "model.onnx")).graph
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types
    assert _min_cos(load_text_encoder(tmp_path / "b"), load_text_encoder(student_dir)) >= 0.995


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_st_teacher(tmp_path: Path, st_teacher_dir: Path, precision: str) -> None:
    meta = export_bundle(st_teacher_dir, tmp_path / "b", ExportOptions(precision))
    assert meta["card"] == {} and meta["dimension"] == 32
    if precision == "int8":  # BERT's recipe: both layers' FFN down-projections stay fp32
        assert meta["towers"]["text"]["conversion"]["fp32_matmuls"] == 2
    bundle, ref = load_text_encoder(tmp_path / "b"), load_text_encoder(st_teacher_dir)
    assert _min_cos(bundle, ref) >= THRESHOLDS[precision]


@pytest.mark.parametrize("op_types", [None, "MatMul,Attention"])
def test_int8_op_types_decide_whether_fused_attention_is_quantized(
    tmp_path: Path, st_teacher_dir: Path, op_types: str | None
) -> None:
    """BERT's recipe leaves the fused Attention ops (QKV projections) in fp32, the largest
    int8 error on e5 students; --int8-op-types can put them back."""
    argv = ["export", "--model", str(st_teacher_dir), "--out", str(tmp_path / "b")]
    argv += ["--precision", "int8"] + (["--int8-op-types", op_types] if op_types else [])
    assert main(argv) == 0
    ops = {n.op_type for n in onnx.load(str(tmp_path / "b" / "model.onnx")).graph.node}
    conversion = read_bundle(tmp_path / "b")["towers"]["text"]["conversion"]
    if op_types is None:
        assert "Attention" in ops and "QAttention" not in ops
        assert conversion["op_types"] == ["MatMul", "Gather", "EmbedLayerNormalization"]
    else:
        assert "QAttention" in ops and conversion["op_types"] == ["MatMul", "Attention"]
    assert "DynamicQuantizeMatMul" in ops or "MatMulInteger" in ops


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_dual_bundle_holds_both_towers(tmp_path: Path, dual_dir: Path, precision: str) -> None:
    export_bundle(dual_dir, tmp_path / "b", ExportOptions(precision))
    assert {p.name for p in (tmp_path / "b").glob("*.onnx")} == {"model.onnx", "image.onnx"}
    text, image = load_encoders(tmp_path / "b")
    ref_text, ref_image = load_encoders(dual_dir)
    assert isinstance(text, OnnxTextEncoder) and isinstance(image, OnnxImageEncoder)
    assert ref_image is not None and image.info == ref_image.info
    assert _min_cos(text, ref_text) >= THRESHOLDS[precision]
    imgs = random_images(5, seed=7)
    cos = np.sum(image.encode(imgs, batch_size=3) * ref_image.encode(imgs), axis=1)
    assert cos.min() >= THRESHOLDS[precision]


def test_image_tower_alone(tmp_path: Path, clip_dir: Path) -> None:
    argv = ["export", "--model", str(clip_dir), "--out", str(tmp_path / "b"), "--tower", "image"]
    assert main(argv) == 0
    text, image = load_bundle(tmp_path / "b")
    assert text is None and image is not None and image.encode(random_images(2)).shape == (2, 16)
    with pytest.raises(EncoderError, match="only an image tower"):
        load_encoders(tmp_path / "b")


def test_dynamic_batch_and_sequence_axes(student_bundle: Path, student_dir: Path) -> None:
    bundle = load_text_encoder(student_bundle)
    assert isinstance(bundle, OnnxTextEncoder)
    session = bundle.graph.session
    for batch, seq in ((1, 3), (7, 3), (1, 24), (7, 24)):
        ids = np.full((batch, seq), 5, dtype=np.int64)
        out = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        assert out.shape == (batch, 16)
    one = np.concatenate([bundle.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(bundle.encode(TEXTS, batch_size=7), one, atol=1e-5)
    assert _min_cos(bundle, load_text_encoder(student_dir)) >= 0.999


def test_head_is_inside_the_graph(tmp_path: Path, xlmr_dir: Path, student_bundle: Path) -> None:
    # The 16-d student's graph ends in 16 columns, not the backbone's 32.
    assert _output_width(student_bundle / "model.onnx") == 16
    # A square head (32 -> 32) has the backbone's width, so only the values can tell: the bundle
    # matches the student with its head and not the same model without it.
    src = save_student(xlmr_dir, tmp_path / "src", "tanh", dimension=32)
    export_bundle(src, tmp_path / "b", ExportOptions())
    student = SentenceEncoder.load(src)
    got = load_text_encoder(tmp_path / "b").encode(TEXTS)
    batch = student.tokenize(TEXTS)
    with torch.no_grad():
        hidden = student.model.backbone(**batch)[0]
        headless = l2_normalize(pool(hidden, batch["attention_mask"], "mean").numpy())
    assert np.sum(got * student.encode(TEXTS), axis=1).min() >= 0.999
    assert np.sum(got * headless, axis=1).min() < 0.9


def test_cli_int8_export_reports_r1_and_the_bundle_encodes(
    tmp_path: Path, student_dir: Path, val_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle"
    argv = ["export", "--model", str(student_dir), "--out", str(out), "--precision", "int8"]
    argv += ["--int8-keep-fp32", r"intermediate/dense/MatMul$"]  # one FFN MatMul per layer
    assert main([*argv, "--val-data", str(val_dir), "--val-langs", "de,fr,cs"]) == 0
    assert "parity passed" in capsys.readouterr().out
    meta = read_bundle(out)
    conversion = meta["towers"]["text"]["conversion"]
    assert conversion == {
        "method": "dynamic",
        "per_channel": True,
        "reduce_range": True,
        "matmuls": conversion["matmuls"],
        "fp32_matmuls": 2,
        "int8_matmuls": conversion["matmuls"] - 2,
        "smoothed": 0,
    }
    r1 = meta["parity"]["text"]["r1"]
    assert set(r1["languages"]) == {"de", "fr", "cs"}
    de = r1["languages"]["de"]
    assert de["delta"] == pytest.approx(de["bundle"] - de["torch"])
    assert main(["encode", "--model", str(out), "--prefix", "query", "a dog"]) == 0
    row = np.array(json.loads(capsys.readouterr().out))
    ref = load_text_encoder(student_dir).encode(["a dog"], prefix="query")[0]
    assert float(row @ ref) >= 0.98


def test_parity_gate_failure_exits_2_with_figures(
    tmp_path: Path, student_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle"
    argv = ["export", "--model", str(student_dir), "--out", str(out), "--min-cosine", "1.01"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "does not match PyTorch" in err and "threshold 1.01" in err
    assert re.search(r"text: cosine min \d\.\d{5} mean \d\.\d{5} over \d+ probes", err)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no bundle, no staging left


def test_refuses_to_overwrite_a_non_bundle_or_export_a_bundle(
    tmp_path: Path, student_dir: Path, student_bundle: Path
) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(EncoderError, match="not a bundle"):
        export_bundle(student_dir, tmp_path, ExportOptions())
    assert (tmp_path / "notes.txt").exists()
    with pytest.raises(EncoderError, match="already an ONNX bundle"):
        export_bundle(student_bundle, tmp_path / "again", ExportOptions())


def test_smoothquant_scales_keep_the_product_exact(
    tmp_path: Path, student_bundle: Path, val_dir: Path
) -> None:
    """x/s · diag(s)W = xW: the smoothed fp32 graph computes what the original does."""
    import onnx
    import onnxruntime as ort

    from polyclip.export.bundle import calibration_feeds
    from polyclip.export.parity import ValSet
    from polyclip.export.quantize import smooth_matmuls

    text = load_text_encoder(student_bundle)
    feeds = calibration_feeds(text, ValSet(val_dir, "val", ("de", "fr")))
    model = onnx.load(str(student_bundle / "model.onnx"))
    original = model.SerializeToString()
    names = smooth_matmuls(model, r"layer\.\d+/output/dense/MatMul$", 0.5, feeds)
    assert len(names) == 2  # one FFN down-projection per layer of the tiny backbone
    assert sum(n.op_type == "Mul" and n.name.endswith("/smooth") for n in model.graph.node) == 2
    runs = [ort.InferenceSession(m, providers=["CPUExecutionProvider"])
            for m in (original, model.SerializeToString())]  # fmt: skip
    for feed in feeds[:2]:
        a, b = (r.run(None, feed)[0] for r in runs)
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("method", ["static", "percentile", "smooth"])
def test_static_and_smoothed_int8_bundles(
    tmp_path: Path,
    student_dir: Path,
    val_dir: Path,
    method: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / method
    argv = ["export", "--model", str(student_dir), "--out", str(out), "--precision", "int8"]
    extra = {
        "static": ["--int8-method", "static"],
        # histogram calibration: stacks the batches' activations (equal lengths needed)
        "percentile": ["--int8-method", "static", "--int8-static-calibration", "percentile"],
        "smooth": ["--int8-smooth", r"layer\.\d+/output/dense/MatMul$"],
    }[method]
    assert main([*argv, *extra]) == 2  # no calibration text: refused, with the reason
    assert "calibration text" in capsys.readouterr().err
    assert not out.exists()  # refused before any export work
    fp32 = [a if a != "int8" else "fp32" for a in argv]
    assert main([*fp32, *extra]) == 2  # int8 options on another precision: refused
    assert "--precision int8" in capsys.readouterr().err
    train = write_aligned(tmp_path / "m30k", {"train": (40, 0)})  # en, de, fr training captions
    calibrate = ["--calibration-data", str(train), "--val-langs", "de,fr", "--min-cosine", "0.9"]
    assert main([*argv, *extra, *calibrate]) == 0
    conversion = read_bundle(out)["towers"]["text"]["conversion"]
    assert conversion["fp32_matmuls"] == 0 and conversion["int8_matmuls"] == conversion["matmuls"]
    if method != "smooth":
        calibration = "minmax" if method == "static" else "percentile"
        assert conversion["method"] == "static" and conversion["calibration"] == calibration
        graph = onnx.load(str(out / "model.onnx")).graph
        assert any(n.op_type == "QuantizeLinear" for n in graph.node)  # QDQ
    else:
        assert conversion["smoothed"] == 2 and conversion["smooth_alpha"] == 0.5
    assert read_bundle(out)["parity"]["passed"]
