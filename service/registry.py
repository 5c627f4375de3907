"""Served models and the aliases that point at them.

An alias (``teacher``, ``student``, ``search-query``) is what clients and collections name; an
admin call or a config reload re-points it with no restart. Because a student lives in its
teacher's space, re-pointing ``search-query`` from teacher to student needs no re-indexing: the
registry only has to know each model's space, and the store which spaces a collection holds.

Space ids (:mod:`polyclip.encoders.space`) are fingerprints of weights. Collections, cards and
bundles written before them carry the folder name of the teacher instead (a *legacy* id); the
registry resolves such an id to the served model that was loaded from a folder of that name, so
they keep working without a migration step.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from polyclip.encoders.base import EncoderInfo, ImageEncoder, Prefix, TextEncoder
from polyclip.encoders.embedding_types import read_calibration
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.hub import resolve_model_dir
from polyclip.encoders.load import load_encoders
from polyclip.encoders.space import is_legacy, same_space
from polyclip.service.batcher import Batcher, BatchResult, Lane
from polyclip.service.config import ConfigError, ModelConfig
from polyclip.service.domain import Conflict, NotFound
from polyclip.service.metrics import Metrics

log = logging.getLogger(__name__)


def _backend(encoder: TextEncoder) -> str:
    """What runs the model; reported, and checked against the config's ``backend``."""
    return "onnx" if "onnx" in type(encoder).__module__ else "torch"


def _override(info: EncoderInfo, cfg: ModelConfig) -> EncoderInfo:
    changes: dict[str, Any] = {}
    if cfg.space:
        changes["space"] = cfg.space
    if cfg.prefixes is not None:
        changes["prefixes"] = dict(cfg.prefixes)
    if cfg.max_seq_length and info.kind == "text":
        if info.max_seq_length and cfg.max_seq_length > info.max_seq_length:
            raise ConfigError(
                f"max_seq_length {cfg.max_seq_length} is over the model's own limit "
                f"{info.max_seq_length}"
            )
        changes["max_seq_length"] = cfg.max_seq_length
    return dataclasses.replace(info, **changes) if changes else info


@dataclass
class ServedModel:
    """A loaded model: its towers, its batcher (one worker thread) and its config."""

    name: str
    config: ModelConfig
    text: TextEncoder
    image: ImageEncoder | None
    batcher: Batcher
    backend: str
    space: str = ""  # the space id the registry resolved (a legacy id may map to a new one)
    calibration: np.ndarray | None = None  # for int8/uint8 outputs (embedding_types)

    def __post_init__(self) -> None:
        self.space = self.space or self.text.info.space

    @property
    def info(self) -> EncoderInfo:
        return self.text.info

    @property
    def dimension(self) -> int:
        return self.text.info.dimension

    async def embed_texts(self, texts: list[str], prefix: Prefix | None) -> BatchResult:
        return await self.batcher.submit("text", self.text.apply_prefix(texts, prefix))

    async def embed_images(self, images: list[Any]) -> BatchResult:
        return await self.batcher.submit("image", images)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "dual" if self.image is not None else "text",
            "backend": self.backend,
            "space": self.space,
            "dimension": self.dimension,
            "max_seq_length": self.info.max_seq_length,
            "prefixes": dict(self.info.prefixes),
            "device": self.config.device,
            "retention": self.text.card.get("retention"),
        }


def load_model(name: str, cfg: ModelConfig, metrics: Metrics) -> ServedModel:
    """Load one model and start its worker (blocking: seconds to minutes for big models)."""
    try:
        text, image = load_encoders(cfg.path, device=cfg.device)
        text.info = _override(text.info, cfg)
        if image is not None:
            image.info = _override(image.info, cfg)
    except EncoderError as e:  # missing folder, bad weights, a cap over the model's limit
        raise ConfigError(f"model {name!r}: {e}") from e
    if cfg.kind == "text":
        image = None
    elif cfg.kind == "dual" and image is None:
        raise ConfigError(f"model {name!r}: kind is 'dual' but {cfg.path} has no image tower")
    backend = _backend(text)
    if cfg.backend not in ("auto", backend):
        raise ConfigError(f"model {name!r}: backend is {cfg.backend!r} but {cfg.path} is {backend}")
    if cfg.max_seq_length and not _respects_cap(text, cfg.max_seq_length):
        raise ConfigError(f"model {name!r}: this model's tokenizer ignores a max_seq_length cap")
    lanes = {"text": Lane(prepare=text.tokenize_each, cost=len, run=text.encode_ids)}
    if image is not None:
        tower = image
        lanes["image"] = Lane(
            prepare=list,
            cost=lambda _: 1,
            run=lambda xs: tower.encode(xs, batch_size=len(xs), show_progress=False),
        )
    batcher = Batcher(
        name,
        lanes,
        max_batch_tokens=cfg.max_batch_tokens,
        max_batch_size=cfg.max_batch_size,
        max_wait_s=cfg.max_wait_ms / 1000,
        max_queue_items=cfg.max_queue_items,
        metrics=metrics,
        express=cfg.express,
    )
    log.info(
        "model %s: %s (%s, space %s, dim %d)",
        name,
        cfg.path,
        backend,
        text.info.space,
        text.info.dimension,
    )
    calibration = read_calibration(resolve_model_dir(cfg.path))
    return ServedModel(name, cfg, text, image, batcher, backend, calibration=calibration)


def _respects_cap(text: TextEncoder, cap: int) -> bool:
    """Every backend truncates via ``info.max_seq_length``? Ask it rather than assume."""
    return text.count_tokens(["a " * (cap + 8)])[0] <= cap


def legacy_map(models: dict[str, ServedModel]) -> dict[str, str]:
    """Folder-name id → space id, for models that define a space; ambiguous names are left out."""
    found: dict[str, set[str]] = {}
    for m in models.values():
        legacy = m.info.legacy_space
        if legacy and not is_legacy(m.info.space):
            found.setdefault(legacy, set()).add(m.info.space)
    return {legacy: spaces.pop() for legacy, spaces in found.items() if len(spaces) == 1}


class Registry:
    """Model names and aliases → loaded models; swapped as a whole on reload."""

    def __init__(self, models: dict[str, ServedModel], aliases: dict[str, str]) -> None:
        self.models = models
        self.aliases = dict(aliases)
        self.legacy = legacy_map(models)
        for m in models.values():
            recorded = m.info.space
            m.space = self.legacy.get(recorded, recorded) if is_legacy(recorded) else recorded
            if m.space != recorded:
                log.info("model %s: legacy space id %r is %s", m.name, recorded, m.space)

    def holds(self, collection_space: str, model: ServedModel) -> bool:
        """Whether ``model`` embeds into a collection's space (legacy ids resolved)."""
        space = self.legacy.get(collection_space, collection_space)
        return same_space(space, model.space) or same_space(collection_space, model.space)

    def resolve(self, ref: str, field: str = "model") -> ServedModel:
        model = self.models.get(self.aliases.get(ref, ref))
        if model is None:
            known = sorted([*self.models, *self.aliases])
            raise NotFound(
                "model_not_found", f"unknown model {ref!r}; served: {known}", field=field
            )
        return model

    def set_alias(self, alias: str, target: str) -> None:
        if alias in self.models:
            raise Conflict(
                "alias_conflict", f"{alias!r} is a model name, not an alias", field="alias"
            )
        name = self.aliases.get(target, target)
        if name not in self.models:
            raise NotFound("model_not_found", f"unknown target model {target!r}", field="target")
        self.aliases[alias] = name

    def describe(self) -> list[dict[str, Any]]:
        """OpenAI's model list, with each model's space and each alias's target."""
        rows = [
            {"id": name, "object": "model", "owned_by": "polyclip", **m.describe()}
            for name, m in sorted(self.models.items())
        ]
        for alias, target in sorted(self.aliases.items()):
            rows.append(
                {
                    "id": alias,
                    "object": "model",
                    "owned_by": "polyclip",
                    "alias_of": target,
                    **self.models[target].describe(),
                }
            )
        return rows

    def close(self, models: list[ServedModel] | None = None) -> None:
        """Drain and stop the workers of ``models`` (default: all)."""
        for m in models if models is not None else list(self.models.values()):
            m.batcher.close()
