"""Precision transforms of a fused fp32 graph: fp16 for CUDA/TensorRT, int8 for CPU.

Both run after fusion, on the fused graph: quantising the fused Attention/MatMul nodes is what gave
232–236 captions/s at cosine 0.990 for e5-small on a 2-core AVX2 EPYC, against 215–232/s at cosine
0.979 for ``quantize_dynamic``'s defaults on the unfused graph — hence per-channel weights and
``reduce_range`` (7-bit weights, which keep accuracy on CPUs without VNNI, where 8-bit products can
saturate).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from polyclip.encoders.errors import EncoderError

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")

# Ops kept in fp32 (casts around them): softmax and LayerNorm statistics where fusion left them
# unfused, the pooling sum over tokens and the final L2 norm. Fused LayerNormalization /
# SkipLayerNormalization / Attention kernels already accumulate in fp32 and stay fp16.
FP16_KEEP_FP32 = ["Softmax", "ReduceMean", "Pow", "Sqrt", "ReduceSum", "ReduceL2"]


Feeds = Sequence[dict[str, np.ndarray]]  # graph inputs of calibration batches (training text)


@dataclass(frozen=True)
class Int8Recipe:
    """int8 settings: which weight MatMuls stay fp32, 7- or 8-bit weights, activations scaled
    per batch at run time (dynamic) or from calibration (static QDQ), and SmoothQuant scales.

    ``smooth`` (a regex on MatMul names) moves activation outliers into the weights before
    quantising: per input channel j, ``s_j = max|x_j|^α / max|W_j|^(1−α)`` from calibration
    batches; the MatMul then takes ``x / s`` (an explicit Mul: it cannot fold into the GELU
    before a down-projection) and ``diag(s)·W``, the same product in exact arithmetic.
    """

    keep_fp32: str = ""  # regex on MatMul node names (the traced module paths)
    reduce_range: bool = True
    method: Literal["dynamic", "static"] = "dynamic"
    static_calibration: Literal["minmax", "percentile"] = "minmax"
    smooth: str = ""  # regex on MatMul node names: SmoothQuant scales before them
    smooth_alpha: float = 0.5
    # ONNX op types to quantize (dynamic method); empty: onnxruntime's default set, which
    # includes the fused Attention op (its QKV projection) and the embedding Gathers.
    op_types: tuple[str, ...] = ()

    @property
    def needs_calibration(self) -> bool:
        return self.method == "static" or bool(self.smooth)


# all-mpnet-base-v2, min cosine against fp32 over the 148-text probe set: the default recipe
# 0.79 — the FFN MatMuls see outlier activations that per-tensor activation quantisation
# flattens; FFN down-projections in fp32: 0.96; all 24 FFN MatMuls in fp32 (attention
# projections int8): 0.992 with 8-bit weights.
#
# multilingual-e5-small students (model_type bert), 1,000 German val captions against fp32, min /
# 1st-percentile cosine: everything int8 0.937 / 0.979 (quick student) and 0.981 / 0.984 (one-epoch
# DR student), so the 0.98 gate refused two of three quick students; the FFN down-projections of
# layers 0-5 in fp32: 0.987 / 0.992 and 0.988 / 0.993 at 0.92x the all-int8 speed (434 vs 473
# captions/s); layers 0-3 only: 0.980 (DR); all 12: 0.989 at 0.82x.
# The default student (MCL from a least-squares head, broad English), 20 parity probes: that
# recipe 0.976 (under the 0.98 gate); the fused Attention ops (QKV projections) left in fp32 as
# well: 0.988; with the embedding table fp32 too: 0.989 at three times the file size. So BERT's
# recipe quantizes MatMul and the embedding lookups, not Attention.
INT8_RECIPES = {
    "mpnet": Int8Recipe(keep_fp32=r"layer\.\d+/(intermediate|output)/dense/MatMul$"),
    "bert": Int8Recipe(
        keep_fp32=r"layer\.[0-5]/output/dense/MatMul$",
        op_types=("MatMul", "Gather", "EmbedLayerNormalization"),
    ),
}


def to_fp16(src: Path, dst: Path) -> None:
    """Weights and activations in fp16, graph inputs/outputs kept fp32 for callers."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=True, op_block_list=FP16_KEEP_FP32)
    model.save_model_to_file(str(dst))


def _matmuls(graph: Any, pattern: str) -> list[Any]:
    return [
        n for n in graph.node if pattern and n.op_type == "MatMul" and re.search(pattern, n.name)
    ]


def _activation_absmax(model: Any, names: list[str], feeds: Feeds) -> dict[str, np.ndarray]:
    """Per-channel max |x| of the tensors ``names`` over the calibration batches."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    out: dict[str, np.ndarray] = {}
    for feed in feeds:
        values = session.run(names, {k: v for k, v in feed.items() if k in wanted})
        for name, value in zip(names, values, strict=True):
            peak = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            out[name] = np.maximum(out[name], peak) if name in out else peak
    return out


def smooth_matmuls(model: Any, pattern: str, alpha: float, feeds: Feeds) -> list[str]:
    """SmoothQuant in place on the MatMuls matching ``pattern``; returns their names."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    uses = Counter(name for n in graph.node for name in n.input)
    # a weight read by another node too (tied weights) cannot take this MatMul's scales alone
    nodes = [n for n in _matmuls(graph, pattern) if n.input[1] in weights and uses[n.input[1]] == 1]
    peaks = _activation_absmax(model, list(dict.fromkeys(n.input[0] for n in nodes)), feeds)
    for node in nodes:
        w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)  # [in, out]
        a = peaks[node.input[0]]
        scale = np.power(np.maximum(a, 1e-5), alpha) / np.power(
            np.maximum(np.abs(w).max(axis=1), 1e-5), 1 - alpha
        )
        scale = np.clip(scale, 1e-2, 1e2).astype(np.float32)
        inv = numpy_helper.from_array((1.0 / scale).astype(np.float32), f"{node.name}/smooth_inv")
        graph.initializer.append(inv)
        smoothed = f"{node.name}/smoothed_input"
        graph.node.insert(
            list(graph.node).index(node),
            helper.make_node("Mul", [node.input[0], inv.name], [smoothed], f"{node.name}/smooth"),
        )
        node.input[0] = smoothed
        weights[node.input[1]].CopyFrom(numpy_helper.from_array(w * scale[:, None], node.input[1]))
    return [n.name for n in nodes]


class _Batches:
    """onnxruntime's CalibrationDataReader over prepared feeds."""

    def __init__(self, feeds: Feeds, inputs: set[str]) -> None:
        self._it = iter([{k: v for k, v in f.items() if k in inputs} for f in feeds])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def to_int8(src: Path, dst: Path, recipe: Int8Recipe, feeds: Feeds | None = None) -> dict[str, Any]:
    """int8 MatMuls (weights per channel); what was done, for bundle.json."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if recipe.needs_calibration and not feeds:
        raise EncoderError("static int8 and SmoothQuant need calibration text (training captions)")
    model = onnx.load(str(src))
    keep = [n.name for n in _matmuls(model.graph, recipe.keep_fp32)]
    smoothed: list[str] = []
    temp: list[Path] = []  # intermediate graphs, removed at the end
    if recipe.smooth:
        smoothed = smooth_matmuls(model, recipe.smooth, recipe.smooth_alpha, feeds or [])
        src = dst.with_name(dst.stem + ".smoothed.onnx")
        temp.append(src)
        onnx.save(model, str(src))
    total = sum(n.op_type == "MatMul" for n in model.graph.node)
    options: dict[str, Any] = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # the quantiser logs every tensor on the root
    try:
        if recipe.method == "dynamic":
            quantize_dynamic(
                src, dst, per_channel=True, reduce_range=recipe.reduce_range,
                weight_type=QuantType.QInt8, nodes_to_exclude=keep, extra_options=options,
                op_types_to_quantize=list(recipe.op_types) or None,
            )  # fmt: skip
        else:  # symbolic shapes first: QDQ skips every tensor whose type it cannot infer
            from onnxruntime.quantization.shape_inference import quant_pre_process

            shaped = dst.with_name(dst.stem + ".shaped.onnx")
            temp.append(shaped)
            quant_pre_process(src, shaped, skip_optimization=True, auto_merge=True)
            src = shaped
            percentile = recipe.static_calibration == "percentile"
            if percentile:
                options["CalibPercentile"] = 99.999
            inputs = {i.name for i in model.graph.input}
            quantize_static(
                src, dst, _Batches(feeds or [], inputs), quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["MatMul"], per_channel=True,
                reduce_range=recipe.reduce_range, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, nodes_to_exclude=keep,
                calibrate_method=CalibrationMethod.Percentile if percentile
                else CalibrationMethod.MinMax,
                extra_options=options,
            )  # fmt: skip
    finally:
        root.setLevel(level)
        for path in temp:
            path.unlink(missing_ok=True)
    return {
        "method": recipe.method,
        **({"calibration": recipe.static_calibration} if recipe.method == "static" else {}),
        "per_channel": True,
        "reduce_range": recipe.reduce_range,
        "matmuls": total,
        "fp32_matmuls": len(keep),
        "int8_matmuls": total - len(keep),
        "smoothed": len(smoothed),
        **({"smooth_alpha": recipe.smooth_alpha} if smoothed else {}),
        **({"op_types": list(recipe.op_types)} if recipe.op_types else {}),
    }


def convert(
    src: Path, dst: Path, precision: Precision, recipe: Int8Recipe, feeds: Feeds | None = None
) -> dict[str, object]:
    """Write ``src`` (fused fp32) to ``dst`` in ``precision``; what was done, for bundle.json."""
    if precision == "fp16":
        to_fp16(src, dst)
        return {"fp32_ops": FP16_KEEP_FP32, "keep_io_types": True}
    if precision == "int8":
        return to_int8(src, dst, recipe, feeds)
    src.replace(dst)
    return {}
