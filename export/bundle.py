"""Build a bundle directory from a model: export, fuse, convert, describe, gate on parity.

The bundle is assembled in a staging directory next to ``out`` and moved into place only after
the parity gate passes, so a directory that has a ``bundle.json`` always holds a checked bundle.
The layout and ``bundle.json`` fields are documented in docs/PERFORMANCE.md and read by
:mod:`polyclip.encoders.onnx_bundle`.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polyclip.encoders.base import ImageEncoder, TextEncoder, pad_ids
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.hub import resolve_model_dir
from polyclip.encoders.load import load_encoders
from polyclip.encoders.onnx_bundle import (
    BUNDLE_FILE,
    BUNDLE_FORMAT,
    TOWER_FILES,
    RuntimeOptions,
    is_bundle_dir,
    load_bundle,
)
from polyclip.encoders.sentence import SentenceEncoder
from polyclip.export.onnx_export import (
    OPSET,
    Kind,
    TowerExport,
    export_graph,
    optimize_graph,
    random_images,
    tower_exports,
)
from polyclip.export.parity import THRESHOLDS, ParityError, Reference, ValSet, check, describe
from polyclip.export.quantize import INT8_RECIPES, Feeds, Int8Recipe, Precision, convert

log = logging.getLogger(__name__)

PARITY_IMAGES = 6
# Default TensorRT profile: batches 1..64 (32 typical), sequences 1..max (64 typical).
TRT_BATCH = {"min": 1, "opt": 32, "max": 64}
TRT_OPT_SEQ = 64


@dataclass
class ExportOptions:
    """What ``polyclip export`` was asked for; defaults are the fp32 text-and-image export."""

    precision: Precision = "fp32"
    towers: list[Kind] = field(default_factory=list)  # empty: every tower the model has
    val: ValSet | None = None
    min_cosine: float | None = None  # None: the precision's threshold (THRESHOLDS)
    optimize: bool = True
    device: str = "cpu"  # where the parity check runs the bundle
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    int8: Int8Recipe | None = None  # None: the architecture's recipe (INT8_RECIPES) or default
    # Training captions for static int8 and SmoothQuant scales (never val: val is the gate's).
    calibration: ValSet | None = None
    opset: int = OPSET

    @property
    def threshold(self) -> float:
        return THRESHOLDS[self.precision] if self.min_cosine is None else self.min_cosine


def _graph_io(path: Path) -> tuple[dict[str, Any], int]:
    """Input names, dtypes and (symbolic) shapes of a graph, and its output width."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def dims(value: Any) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    inputs = {
        i.name: {
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).name,
            "shape": dims(i),
        }
        for i in graph.input
    }
    return inputs, int(dims(graph.output[0])[-1])


def trt_profile(inputs: dict[str, Any], max_seq: int, padding: str) -> dict[str, str]:
    """Min/opt/max shapes for TensorRT from the graph's inputs (``name:1x1,...`` strings)."""
    seq = {"min": 1, "opt": min(TRT_OPT_SEQ, max_seq), "max": max_seq}
    if padding == "max_length":  # SigLIP text is always padded to max length
        seq = dict.fromkeys(seq, max_seq)
    sym = {"batch": TRT_BATCH, "sequence": seq}
    return {
        kind: ",".join(
            f"{name}:" + "x".join(str(sym[d][kind] if d in sym else d) for d in spec["shape"])
            for name, spec in inputs.items()
        )
        for kind in ("min", "opt", "max")
    }


CALIBRATION_TEXTS = 256  # training captions (all languages), in batches of CALIBRATION_BATCH
CALIBRATION_BATCH = 32


def calibration_feeds(text: TextEncoder, calibration: ValSet) -> Feeds:
    """Graph inputs for a seeded sample of training captions, as the bundle tokenizes them.

    Every batch has the same shape (the sample's longest caption, and no short last batch):
    onnxruntime's histogram calibrators (percentile) stack the batches' activations and fail
    on differing shapes."""
    captions = [t for texts in calibration.load().values() for t in texts if t]
    if not captions:
        raise EncoderError("the calibration text has no captions")
    pick = np.random.default_rng(0).permutation(len(captions))[:CALIBRATION_TEXTS]
    prefix = text.info.prefixes.get("passage", "")
    tokens = text.tokenize_each([prefix + captions[i] for i in sorted(pick)])
    size = min(CALIBRATION_BATCH, len(tokens))
    tokens = tokens[: len(tokens) - len(tokens) % size]
    width = max(map(len, tokens))
    pad = getattr(getattr(text, "tokenizer", None), "pad_token_id", None) or 0
    feeds = []
    for start in range(0, len(tokens), size):
        ids, mask = pad_ids(tokens[start : start + size], pad, width)
        feeds.append({"input_ids": ids, "attention_mask": mask})
    return feeds


def _build_tower(
    tower: TowerExport, stage: Path, opts: ExportOptions, max_seq: int, feeds: Feeds | None
) -> dict[str, Any]:
    """Trace, fuse and convert one tower into ``stage``; its ``bundle.json`` entry."""
    raw, fused = stage / f"{tower.kind}.raw.onnx", stage / f"{tower.kind}.fused.onnx"
    final = stage / TOWER_FILES[tower.kind]
    log.info("exporting the %s tower (%s)", tower.kind, tower.arch)
    export_graph(tower, raw, opts.opset)
    fused_ops: dict[str, int] = {}
    if opts.optimize:
        fused_ops = optimize_graph(raw, fused, tower)
        raw.unlink()
    else:
        raw.replace(fused)
    log.info("%s tower fused %s; converting to %s", tower.kind, fused_ops, opts.precision)
    recipe = opts.int8 or INT8_RECIPES.get(tower.arch, Int8Recipe())
    conversion = convert(fused, final, opts.precision, recipe, feeds)
    fused.unlink(missing_ok=True)
    inputs, width = _graph_io(final)
    entry: dict[str, Any] = {
        "file": final.name,
        "inputs": inputs,
        "output": {"name": "embedding", "dimension": width, "normalized": True},
        "fused_ops": fused_ops,
        "conversion": conversion,
        "tensorrt_profile": trt_profile(inputs, max_seq, tower.padding),
    }
    if tower.kind == "text":
        entry["padding"] = tower.padding
        overrides = {
            k: getattr(opts.runtime, f"trt_profile_{k}_shapes") for k in ("min", "opt", "max")
        }
        entry["tensorrt_profile"].update({k: v for k, v in overrides.items() if v})
    return entry


def _save_preprocessing(text: TextEncoder | None, image: ImageEncoder | None, stage: Path) -> None:
    """The tokenizer (and image processor) the bundle's encoders load."""
    if isinstance(text, SentenceEncoder):
        text.tokenizer.save_pretrained(stage)
    dual = getattr(text, "dual", None) or getattr(image, "dual", None)
    if dual is not None:
        dual.processor.save_pretrained(stage)


def versions() -> dict[str, str]:
    """Versions of the libraries that shape an exported graph and its speed."""
    return {p: md.version(p) for p in ("torch", "transformers", "onnx", "onnxruntime")}


def _stage_dir(out: Path) -> Path:
    if out.exists() and not is_bundle_dir(out) and any(out.iterdir()):
        raise EncoderError(f"{out} exists and is not a bundle; refusing to overwrite it")
    stage = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


def _write(stage: Path, meta: dict[str, Any]) -> None:
    text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
    (stage / BUNDLE_FILE).write_text(text, encoding="utf-8")


def export_bundle(model: str | Path, out: Path, opts: ExportOptions) -> dict[str, Any]:
    """Export ``model`` to the bundle directory ``out``; raise :class:`ParityError` on a mismatch.

    Returns the written ``bundle.json`` content (with the parity figures).
    """
    src = resolve_model_dir(model)
    if is_bundle_dir(src):
        raise EncoderError(f"{src} is already an ONNX bundle; export its source model instead")
    text, image = load_encoders(src)
    kinds: list[Kind] = opts.towers or (["text", "image"] if image is not None else ["text"])
    text_in = text if "text" in kinds else None
    image_in = image if "image" in kinds else None
    # Reference outputs first: export switches the model to eager attention for tracing.
    ref = Reference.compute(text_in, image_in, random_images(PARITY_IMAGES), opts.val)
    exports = tower_exports(text, image, kinds)
    feeds = None
    if opts.precision == "int8" and opts.calibration is not None:
        feeds = calibration_feeds(text, opts.calibration)
    stage = _stage_dir(out)
    try:
        towers = {
            t.kind: _build_tower(
                t, stage, opts, text.max_seq_length, feeds if t.kind == "text" else None
            )
            for t in exports
        }
        _save_preprocessing(text_in, image_in, stage)
        info = text.info
        meta: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "name": info.name,
            "space": info.space,
            "legacy_space": info.legacy_space,
            "dimension": info.dimension,
            "max_seq_length": info.max_seq_length,
            "prefixes": dict(info.prefixes),
            "precision": opts.precision,
            "source": {
                "path": str(src.resolve()),
                "arch": exports[0].arch,
                "dual": image is not None,
            },
            "card": dict(text.card),  # the source's polyclip.json, retention included
            "towers": towers,
            "runtime": {
                k: v for k, v in asdict(opts.runtime).items() if not k.startswith("trt_profile")
            },
            "exporter": {**versions(), "opset": opts.opset, "dynamo": False},
        }
        _write(stage, meta)
        bundle_text, bundle_image = load_bundle(stage, device=opts.device)
        meta["parity"] = check(ref, bundle_text, bundle_image, opts.threshold)
        _write(stage, meta)
        figures = describe(meta["parity"])
        if not meta["parity"]["passed"]:
            raise ParityError(
                f"{opts.precision} bundle of {src.name} does not match PyTorch: {figures}"
            )
        log.info("parity passed: %s", figures)
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return meta
