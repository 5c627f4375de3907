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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")

# Ops kept in fp32 (casts around them): softmax and LayerNorm statistics where fusion left them
# unfused, the pooling sum over tokens and the final L2 norm. Fused LayerNormalization /
# SkipLayerNormalization / Attention kernels already accumulate in fp32 and stay fp16.
FP16_KEEP_FP32 = ["Softmax", "ReduceMean", "Pow", "Sqrt", "ReduceSum", "ReduceL2"]


@dataclass(frozen=True)
class Int8Recipe:
    """Dynamic int8 settings: which weight MatMuls stay fp32, and 7- or 8-bit weights."""

    keep_fp32: str = ""  # regex on MatMul node names (the traced module paths)
    reduce_range: bool = True


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
INT8_RECIPES = {
    "mpnet": Int8Recipe(keep_fp32=r"layer\.\d+/(intermediate|output)/dense/MatMul$"),
    "bert": Int8Recipe(keep_fp32=r"layer\.[0-5]/output/dense/MatMul$"),
}


def to_fp16(src: Path, dst: Path) -> None:
    """Weights and activations in fp16, graph inputs/outputs kept fp32 for callers."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=True, op_block_list=FP16_KEEP_FP32)
    model.save_model_to_file(str(dst))


def to_int8(src: Path, dst: Path, recipe: Int8Recipe) -> list[str]:
    """Dynamic int8: weights per channel, activations per batch at run time.

    Returns the MatMul nodes ``recipe`` kept in fp32.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src), load_external_data=False).graph
    keep = [
        n.name
        for n in graph.node
        if recipe.keep_fp32 and n.op_type == "MatMul" and re.search(recipe.keep_fp32, n.name)
    ]
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # the quantiser logs every tensor on the root
    try:
        quantize_dynamic(
            src,
            dst,
            per_channel=True,
            reduce_range=recipe.reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep,
            # onnx shape inference cannot type the outputs of fused contrib ops (Attention, ...).
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)
    return keep


def convert(src: Path, dst: Path, precision: Precision, recipe: Int8Recipe) -> dict[str, object]:
    """Write ``src`` (fused fp32) to ``dst`` in ``precision``; what was done, for bundle.json."""
    if precision == "fp16":
        to_fp16(src, dst)
        return {"fp32_ops": FP16_KEEP_FP32, "keep_io_types": True}
    if precision == "int8":
        keep = to_int8(src, dst, recipe)
        return {"per_channel": True, "reduce_range": recipe.reduce_range, "fp32_matmuls": len(keep)}
    src.replace(dst)
    return {}
