"""PyTorch towers to ONNX graphs that end in unit vectors, then onnxruntime's fusion pass.

Each exported graph is the whole embedding function — backbone, pooling, projection head, L2 norm —
because a known failure of other exporters is a graph that stops at the backbone and silently drops
the Dense head. The legacy TorchScript exporter (``dynamo=False``) is used on purpose: on the build
machine its graphs are the ones onnxruntime's transformer optimiser fuses (12 Attention, 24
SkipLayerNorm, 12 BiasGelu for e5-small; the dynamo graph got no attention fusion, and its fp32
graph ran 134–140 captions/s against 143–145 for the legacy one). Eager attention is traced for the
same reason: the fusion patterns match it.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import PretrainedConfig

from polyclip.encoders.base import ImageEncoder, TextEncoder
from polyclip.encoders.dual import DualImageEncoder, DualTextEncoder, _features
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.sentence import SentenceEncoder, SentenceModel

log = logging.getLogger(__name__)

OPSET = 17
OUTPUT = "embedding"
# Source model_type -> onnxruntime optimiser model_type. "bert" fusion on a CLIP text tower
# fuses attention without its causal mask (cosine 0.97 on the tiny CLIP), so CLIP/SigLIP use
# the "clip" patterns; architectures not listed are exported unfused.
ORT_MODEL_TYPES = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "distilbert": "bert",
    "mpnet": "bert",
    "clip": "clip",
    "siglip": "clip",
    "siglip2": "clip",
}
Kind = Literal["text", "image"]


class SentenceGraph(nn.Module):
    """A student or sentence-transformers teacher: pooled, projected, then normalised."""

    def __init__(self, model: SentenceModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(input_ids, attention_mask), dim=-1)


class DualTextGraph(nn.Module):
    """A CLIP/SigLIP text tower including its projection, then normalised."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return F.normalize(_features(out), dim=-1)


class DualImageGraph(nn.Module):
    """A CLIP/SigLIP image tower including its projection, then normalised."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(_features(self.model.get_image_features(pixel_values=pixel_values)), -1)


@dataclass
class TowerExport:
    """Everything needed to trace one tower and to describe its graph in ``bundle.json``."""

    kind: Kind
    graph: nn.Module
    example: dict[str, torch.Tensor]  # traced inputs, in graph input order
    config: PretrainedConfig  # the tower's own config: heads and width for the fusion passes
    arch: str  # the source model_type, which picks the fusion patterns
    padding: str = "longest"  # text only: how the bundle must pad to match the source

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Batch is dynamic everywhere, sequence for text; image size is fixed by the processor."""
        axes = _SEQ_AXES if self.kind == "text" else {0: "batch"}
        return {**dict.fromkeys(self.example, axes), OUTPUT: {0: "batch"}}


def random_images(n: int, seed: int = 0) -> list[Image.Image]:
    """Seeded noise images of mixed sizes: no real images ship with polyclip (Flickr licence)."""
    rng = np.random.default_rng(seed)
    sizes = [(224, 224), (320, 240), (180, 300), (64, 48)]
    return [
        Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8"))
        for w, h in (sizes[i % len(sizes)] for i in range(n))
    ]


# Two texts of different lengths, so the traced batch has padding and the mask path is traced.
_EXAMPLE_TEXTS = ["a photo of a dog running on the grass in the park", "a dog"]
_SEQ_AXES = {0: "batch", 1: "sequence"}


def _text_example(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: batch[k] for k in ("input_ids", "attention_mask")}


def _sentence_text(enc: SentenceEncoder) -> TowerExport:
    enc.model.backbone.set_attn_implementation("eager")
    cfg = enc.model.backbone.config
    example = _text_example(enc.tokenize(_EXAMPLE_TEXTS))
    return TowerExport("text", SentenceGraph(enc.model), example, cfg, cfg.model_type)


def _dual_text(enc: DualTextEncoder) -> TowerExport:
    dual = enc.dual
    dual.model.set_attn_implementation("eager")
    cfg = dual.model.config.text_config
    # SigLIP was trained on max_length padding; the bundle must pad the same way.
    padding = "max_length" if dual.model_type.startswith("siglip") else "longest"
    example = _text_example(dual.tokenize(_EXAMPLE_TEXTS))
    return TowerExport("text", DualTextGraph(dual.model), example, cfg, dual.model_type, padding)


def _dual_image(enc: DualImageEncoder) -> TowerExport:
    dual = enc.dual
    dual.model.set_attn_implementation("eager")
    cfg = dual.model.config.vision_config
    pixels = dual.processor.image_processor(images=random_images(2), return_tensors="pt")
    example = {"pixel_values": pixels["pixel_values"].to(dual.device)}
    return TowerExport("image", DualImageGraph(dual.model), example, cfg, dual.model_type)


def tower_exports(
    text: TextEncoder | None, image: ImageEncoder | None, kinds: list[Kind]
) -> list[TowerExport]:
    """The towers of loaded PyTorch encoders that ``kinds`` asks for, ready to trace."""
    out: list[TowerExport] = []
    for kind in kinds:
        if kind == "text" and isinstance(text, SentenceEncoder):
            out.append(_sentence_text(text))
        elif kind == "text" and isinstance(text, DualTextEncoder):
            out.append(_dual_text(text))
        elif kind == "image" and isinstance(image, DualImageEncoder):
            out.append(_dual_image(image))
        else:
            raise EncoderError(f"this model has no {kind} tower that polyclip can export")
    return out


def export_graph(tower: TowerExport, path: Path, opset: int = OPSET) -> None:
    """Trace ``tower`` to ``path`` with dynamic batch (and sequence) axes."""
    # A fresh wrapper module is in training mode, and the exporter restores that mode onto
    # the whole model afterwards (dropout on!) unless the wrapper itself is put in eval.
    graph = tower.graph.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python ifs
        torch.onnx.export(
            graph,
            tuple(tower.example.values()),
            str(path),
            input_names=list(tower.example),
            output_names=[OUTPUT],
            dynamic_axes=tower.dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def optimize_graph(src: Path, dst: Path, tower: TowerExport) -> dict[str, int]:
    """Fuse attention/LayerNorm/GELU with onnxruntime's transformer optimiser.

    Returns the fused-operator counts (empty when the architecture has no fusion patterns, in
    which case ``dst`` is the unfused graph); the parity gate checks the result either way. The
    fused graph is provider-neutral: ``use_gpu`` would add an onnxruntime pass that needs a GPU
    here and turns the static output width into a symbol; onnxruntime applies its
    provider-specific rewrites when a session loads the graph anyway.
    """
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.WARNING)  # per-pass chatter
    model_type = ORT_MODEL_TYPES.get(tower.arch)
    if model_type is None:
        log.warning("no onnxruntime fusion patterns for %r: exporting unfused", tower.arch)
        onnx.save(onnx.load(str(src)), str(dst))
        return {}
    opt = optimize_model(
        str(src),
        model_type=model_type,
        num_heads=tower.config.num_attention_heads,
        hidden_size=tower.config.hidden_size,
    )
    opt.save_model_to_file(str(dst))
    return {op: n for op, n in opt.get_fused_operator_statistics().items() if n}
