"""CLIP, SigLIP and SigLIP2 dual encoders (the paper's teachers) through ``transformers``.

Both towers share one loaded model; each is exposed behind the common encoder interface, so a
CLIP teacher's text tower, its image tower and a distilled student all embed into one space.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

from polyclip.encoders.base import EncoderInfo, ImageEncoder, TextEncoder, l2_normalize, pad_ids
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.hub import resolve_model_dir
from polyclip.encoders.space import compute_space_id, read_card

DUAL_MODEL_TYPES = ("clip", "siglip", "siglip2")


def is_dual_dir(path: Path) -> bool:
    """True for a transformers directory whose config is a CLIP/SigLIP dual encoder."""
    cfg = path / "config.json"
    if not cfg.exists() or (path / "modules.json").exists():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") in DUAL_MODEL_TYPES
    except json.JSONDecodeError:
        return False


def _features(out: torch.Tensor | object) -> torch.Tensor:
    """transformers 5 returns a ModelOutput whose pooler_output holds the projected features."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class DualModel:
    """One loaded CLIP/SigLIP model and processor, shared by its text and image towers."""

    def __init__(self, ref: str | Path, *, device: str = "cpu") -> None:
        path = resolve_model_dir(ref)
        if not is_dual_dir(path):
            raise EncoderError(f"{path} is not a CLIP/SigLIP/SigLIP2 model directory")
        try:
            self.model = AutoModel.from_pretrained(path).to(device).eval()
            self.processor = AutoProcessor.from_pretrained(path)
        except Exception as e:  # corrupt weights, bad configs: one clear message
            raise EncoderError(f"cannot load dual encoder from {path}: {e}") from e
        self.path = path
        self.device = device
        self.model_type: str = self.model.config.model_type
        text_cfg = self.model.config.text_config
        self.max_seq_length = int(text_cfg.max_position_embeddings)
        self.dimension = int(
            getattr(self.model.config, "projection_dim", None) or text_cfg.hidden_size
        )
        self.space = read_card(path).get("space") or compute_space_id(path)

    def info(self, kind: str) -> EncoderInfo:
        return EncoderInfo(
            name=self.path.name,
            kind=kind,  # type: ignore[arg-type]
            dimension=self.dimension,
            max_seq_length=self.max_seq_length if kind == "text" else 0,
            space=self.space,
            legacy_space=self.path.name,
        )

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        # SigLIP was trained on text padded to a fixed length; padding otherwise shifts outputs.
        padding = "max_length" if self.model_type.startswith("siglip") else True
        batch = self.processor.tokenizer(
            list(texts),
            padding=padding,
            truncation=True,
            max_length=self.max_seq_length,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in batch.items() if k != "token_type_ids"}


class DualTextEncoder(TextEncoder):
    """The text tower of a CLIP/SigLIP model."""

    def __init__(self, dual: DualModel) -> None:
        self.dual = dual
        self.info = dual.info("text")

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            out = self.dual.model.get_text_features(**self.dual.tokenize(texts))
        return _features(out).float().cpu().numpy()

    def tokenize_each(self, texts: Sequence[str]) -> list[list[int]]:
        limit = self.dual.max_seq_length
        return self.dual.processor.tokenizer(list(texts), truncation=True, max_length=limit)[
            "input_ids"
        ]

    def encode_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        tokenizer = self.dual.processor.tokenizer
        siglip = self.dual.model_type.startswith("siglip")  # trained on max-length padding
        length = self.dual.max_seq_length if siglip else None
        input_ids, mask = pad_ids(ids, tokenizer.pad_token_id or 0, length)
        batch = {"input_ids": torch.from_numpy(input_ids).to(self.dual.device)}
        if "attention_mask" in tokenizer.model_input_names:  # as tokenize() passes it on
            batch["attention_mask"] = torch.from_numpy(mask).to(self.dual.device)
        with torch.inference_mode():
            out = self.dual.model.get_text_features(**batch)
        return l2_normalize(_features(out).float().cpu().numpy())


class DualImageEncoder(ImageEncoder):
    """The image tower of a CLIP/SigLIP model, with the model's own image processor."""

    def __init__(self, dual: DualModel) -> None:
        self.dual = dual
        self.info = dual.info("image")

    def _encode_batch(self, images: list[Image.Image]) -> np.ndarray:
        pixels = self.dual.processor.image_processor(images=images, return_tensors="pt")
        with torch.inference_mode():
            out = self.dual.model.get_image_features(
                pixel_values=pixels["pixel_values"].to(self.dual.device)
            )
        return _features(out).float().cpu().numpy()
