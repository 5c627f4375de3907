"""The service core: the models, their batchers, the store and the limits of one running server.

It speaks its own language, :mod:`polyclip.service.domain` errors and plain values, and knows
nothing of HTTP: routes parse a request, call one method here and shape the answer. Collections,
upserts and searches are :class:`~polyclip.service.collections.Collections`, owned by the core.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from polyclip.encoders.base import Prefix
from polyclip.service.batcher import BatcherClosed, BatchResult, QueueFull
from polyclip.service.collections import Collections
from polyclip.service.config import ConfigError, ModelConfig, Settings, load_settings
from polyclip.service.domain import (
    BadInput,
    Conflict,
    Overloaded,
    Timeout,
    TooLarge,
    Unavailable,
)
from polyclip.service.images import load_images
from polyclip.service.memory import MemoryTrimmer, glibc_malloc_trim
from polyclip.service.metrics import Metrics
from polyclip.service.registry import Registry, ServedModel, load_model
from polyclip.service.store import Store, StoreError
from polyclip.service.store_edge import EdgeStore
from polyclip.service.store_server import ServerStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextEmbeddings:
    rows: np.ndarray
    tokens: list[int]
    truncated: list[int]  # positions (in the request) of texts cut at the token limit


@dataclass(frozen=True)
class AliasState:
    models: list[str]
    aliases: dict[str, str]
    loaded: list[str] = field(default_factory=list)  # models (re)loaded by this call
    removed: list[str] = field(default_factory=list)


def open_store(settings: Settings) -> Store:
    """The embedded store under ``data_dir``, a Qdrant server when a URL is set, or
    qdrant-client's local files at ``qdrant_path``."""
    if settings.qdrant_url:
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return ServerStore(settings.qdrant_url, key)
    if settings.qdrant_path:
        return ServerStore(path=settings.qdrant_path)
    return EdgeStore(settings.data_dir, settings.flush_interval_s, settings.indexing_threshold_kb)


def load_models(configs: dict[str, ModelConfig], metrics: Metrics) -> dict[str, ServedModel]:
    """Load every model or none: a failure stops the workers already started."""
    loaded: dict[str, ServedModel] = {}
    try:
        for name, cfg in configs.items():
            loaded[name] = load_model(name, cfg, metrics)
    except BaseException:
        Registry(loaded, {}).close()
        raise
    return loaded


class Service:
    """Settings, models, store and metrics of one running server."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        registry: Registry,
        store: Store,
        config_file: Path | None,
    ) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.metrics = metrics
        self.registry = registry
        self.collections = Collections(self, store)
        self.config_file = config_file
        self.draining = False
        self._reload_lock = asyncio.Lock()
        self.trimmer = MemoryTrimmer(settings.memory_trim_interval_s, metrics, glibc_malloc_trim())

    @classmethod
    async def start(cls, settings: Settings, metrics: Metrics, config_file: Path | None) -> Service:
        store = await asyncio.to_thread(open_store, settings)
        try:
            models = await asyncio.to_thread(load_models, settings.models, metrics)
        except BaseException:
            store.close()
            raise
        svc = cls(settings, metrics, Registry(models, settings.aliases), store, config_file)
        metrics.quarantined.set(len(store.quarantined))
        if settings.demo is not None:
            try:
                await svc.collections.index_demo(settings.demo)
            except BaseException:
                await svc.stop()
                raise
        svc.trimmer.start()
        metrics.ready.set(1)
        return svc

    async def stop(self) -> None:
        """Finish queued work, stop the workers, flush and close the store."""
        self.draining = True
        self.metrics.ready.set(0)
        await self.trimmer.stop()
        await asyncio.to_thread(self.registry.close)
        await asyncio.to_thread(self.collections.store.close)

    async def ready(self) -> str | None:
        """None when ready, else why not (for anyone to read: no paths, no addresses)."""
        if self.draining:
            return "shutting down"
        try:
            await asyncio.to_thread(self.collections.store.ping)
        except StoreError as e:
            log.error("readiness: the store failed: %s", e)
            self.metrics.ready.set(0)
            return "the store is unavailable; the server log has the details"
        self.metrics.ready.set(1)
        return None

    # ---- limits ----------------------------------------------------------------------------
    def check_count(self, n: int, field: str) -> None:
        if n > self.limits.max_items:
            raise TooLarge(
                "too_many_items",
                f"{n} items in one request, over the limit of {self.limits.max_items}",
                field=field,
            )

    def check_texts(self, texts: Sequence[str], fields: Sequence[str]) -> None:
        for text, where in zip(texts, fields, strict=True):
            if len(text) > self.limits.max_text_chars:
                raise TooLarge(
                    "text_too_long",
                    f"text has {len(text)} characters, over the limit of "
                    f"{self.limits.max_text_chars}",
                    field=where,
                )

    # ---- models ----------------------------------------------------------------------------
    def model(self, ref: str, field: str = "model") -> ServedModel:
        return self.registry.resolve(ref, field)

    async def _wait(self, model: ServedModel, job: Any) -> BatchResult:
        try:
            return await asyncio.wait_for(job, self.limits.request_timeout_s)
        except QueueFull as e:
            raise Overloaded("queue_full", f"{e}; retry shortly") from e
        except TimeoutError as e:
            raise Timeout(
                "timeout",
                f"model {model.name!r} did not answer within {self.limits.request_timeout_s} s",
            ) from e
        except BatcherClosed as e:
            raise Unavailable("model_unavailable", str(e)) from e

    async def embed_texts(
        self,
        model: ServedModel,
        texts: list[str],
        prefix: Prefix | None,
        fields: Sequence[str],
        *,
        truncate: bool = True,
    ) -> TextEmbeddings:
        """Unit rows for ``texts``; texts over the model's token limit are cut and reported."""
        self.check_texts(texts, fields)
        result = await self._wait(model, model.embed_texts(texts, prefix))
        limit = model.info.max_seq_length
        truncated = [i for i, n in enumerate(result.costs) if limit and n >= limit]
        if truncated and not truncate:
            raise BadInput(
                "text_too_long",
                f"text reaches the model's limit of {limit} tokens; send truncate=true to "
                "embed its first tokens",
                field=fields[truncated[0]],
            )
        return TextEmbeddings(result.rows, result.costs, truncated)

    async def decode_images(self, refs: list[str | bytes], fields: list[str]) -> list[Image.Image]:
        """Base64, data URIs, uploads and (when enabled) URLs → checked, decoded images."""
        return await load_images(refs, self.limits, fields)

    def require_images(self, model: ServedModel, field: str) -> None:
        """``no_image_tower`` for a text-only model: checked before any image is decoded."""
        if model.image is None:
            raise BadInput(
                "no_image_tower",
                f"model {model.name!r} is text-only; use a CLIP/SigLIP model for images",
                field=field,
            )

    async def embed_images(self, model: ServedModel, images: list[Any], field: str) -> np.ndarray:
        """Unit rows for decoded images."""
        self.require_images(model, field)
        return (await self._wait(model, model.embed_images(images))).rows

    # ---- admin -----------------------------------------------------------------------------
    def alias_state(
        self, loaded: list[str] | None = None, removed: list[str] | None = None
    ) -> AliasState:
        return AliasState(
            models=sorted(self.registry.models),
            aliases=dict(sorted(self.registry.aliases.items())),
            loaded=loaded or [],
            removed=removed or [],
        )

    def set_alias(self, alias: str, target: str) -> AliasState:
        """Re-point ``alias`` now; collections indexed through it keep working as long as the
        new model lives in the same space (a student of the same teacher)."""
        self.registry.set_alias(alias, target)
        return self.alias_state()

    async def reload(self) -> AliasState:
        """Re-read models and aliases from the config file; unchanged models stay loaded.

        New models load before anything is swapped, so a bad config leaves the server as it
        was. Other settings (store, limits, API key) need a restart.
        """
        if self.config_file is None:
            raise Conflict("no_config_file", "started without a config file to reload")
        async with self._reload_lock:
            try:
                new = await asyncio.to_thread(load_settings, self.config_file)
                old = self.registry
                keep = {
                    n: m
                    for n, m in old.models.items()
                    if n in new.models and new.models[n] == m.config
                }
                todo = {n: c for n, c in new.models.items() if n not in keep}
                loaded = await asyncio.to_thread(load_models, todo, self.metrics)
            except ConfigError as e:
                raise BadInput("invalid_config", str(e)) from e
            self.registry = Registry({**keep, **loaded}, new.aliases)
            retired = [m for n, m in old.models.items() if keep.get(n) is not m]
            await asyncio.to_thread(old.close, retired)
            gone = sorted(n for n in old.models if n not in new.models)
            return self.alias_state(sorted(loaded), gone)
