"""The service's state and the operations every route shares: embed, store calls, reload.

Routes stay thin: they parse and shape; this module enforces limits, talks to the batchers
with a timeout, and turns queue and store failures into the right HTTP errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import Request

from encoders.base import Prefix
from service.batcher import BatcherClosed, BatchResult, QueueFull
from service.config import ConfigError, ModelConfig, Settings, load_settings
from service.errors import ApiError
from service.metrics import Metrics
from service.registry import Registry, ServedModel, load_model
from service.schemas import AliasTable
from service.store import CollectionExists, CollectionNotFound, Store, StoreError
from service.store_edge import EdgeStore
from service.store_server import ServerStore

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class TextEmbeddings:
    rows: np.ndarray
    tokens: list[int]
    truncated: list[int]  # positions (in the request) of texts cut at the token limit


def open_store(settings: Settings) -> Store:
    """The embedded store under ``data_dir``, or a Qdrant server when a URL is set."""
    if settings.qdrant_url:
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return ServerStore(settings.qdrant_url, key)
    return EdgeStore(settings.data_dir)


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
        self.limits = settings.limits
        self.metrics = metrics
        self.registry = registry
        self.store = store
        self.config_file = config_file
        self.draining = False
        self._reload_lock = asyncio.Lock()

    @classmethod
    async def start(cls, settings: Settings, metrics: Metrics, config_file: Path | None) -> Service:
        store = await asyncio.to_thread(open_store, settings)
        try:
            models = await asyncio.to_thread(load_models, settings.models, metrics)
        except BaseException:
            store.close()
            raise
        return cls(settings, metrics, Registry(models, settings.aliases), store, config_file)

    async def stop(self) -> None:
        """Finish queued work, stop the workers, flush and close the store."""
        self.draining = True
        await asyncio.to_thread(self.registry.close)
        await asyncio.to_thread(self.store.close)

    # ---- limits ----------------------------------------------------------------------------
    def check_count(self, n: int, field: str) -> None:
        if n > self.limits.max_items:
            raise ApiError(
                413,
                "too_many_items",
                f"{n} items in one request, over the limit of {self.limits.max_items}",
                field=field,
            )

    def check_texts(self, texts: Sequence[str], fields: Sequence[str]) -> None:
        for text, field in zip(texts, fields, strict=True):
            if len(text) > self.limits.max_text_chars:
                raise ApiError(
                    413,
                    "text_too_long",
                    f"text has {len(text)} characters, over the limit of "
                    f"{self.limits.max_text_chars}",
                    field=field,
                )

    # ---- embedding -------------------------------------------------------------------------
    async def _wait(self, model: ServedModel, job: Any) -> BatchResult:
        try:
            return await asyncio.wait_for(job, self.limits.request_timeout_s)
        except QueueFull as e:
            raise ApiError(
                429,
                "queue_full",
                f"{e}; retry shortly",
                headers={"Retry-After": "1"},
            ) from e
        except TimeoutError as e:
            raise ApiError(
                504,
                "timeout",
                f"model {model.name!r} did not answer within {self.limits.request_timeout_s} s",
            ) from e
        except BatcherClosed as e:
            raise ApiError(503, "model_unavailable", str(e)) from e

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
            raise ApiError(
                422,
                "text_too_long",
                f"text reaches the model's limit of {limit} tokens; send truncate=true to "
                "embed its first tokens",
                field=fields[truncated[0]],
            )
        return TextEmbeddings(result.rows, result.costs, truncated)

    async def embed_images(self, model: ServedModel, images: list[Any], field: str) -> np.ndarray:
        """Unit rows for decoded images; 422 when the model has no image tower."""
        if model.image is None:
            raise ApiError(
                422,
                "no_image_tower",
                f"model {model.name!r} is text-only; use a CLIP/SigLIP model for images",
                field=field,
            )
        return (await self._wait(model, model.embed_images(images))).rows

    # ---- store -----------------------------------------------------------------------------
    async def store_call(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        """A blocking store call in a thread, timed, with store errors as HTTP errors."""
        start = time.perf_counter()
        status = "ok"
        try:
            return await asyncio.to_thread(fn, *args)
        except CollectionNotFound as e:
            status = "not_found"
            raise ApiError(404, "collection_not_found", str(e), field="name") from e
        except CollectionExists as e:
            status = "exists"
            raise ApiError(409, "collection_exists", str(e), field="name") from e
        except StoreError as e:
            status = "error"
            log.error("store %s failed: %s", op, e)
            raise ApiError(503, "store_unavailable", str(e)) from e
        finally:
            self.metrics.store_duration.labels(op, status).observe(time.perf_counter() - start)

    async def ready(self) -> str | None:
        """None when ready, else why not (for /ready's 503)."""
        if self.draining:
            return "shutting down"
        try:
            await asyncio.to_thread(self.store.ping)
        except StoreError as e:
            return str(e)
        return None

    # ---- admin -----------------------------------------------------------------------------
    def alias_table(
        self, loaded: list[str] | None = None, removed: list[str] | None = None
    ) -> AliasTable:
        return AliasTable(
            models=sorted(self.registry.models),
            aliases=dict(sorted(self.registry.aliases.items())),
            loaded=loaded or [],
            removed=removed or [],
        )

    async def reload(self) -> AliasTable:
        """Re-read models and aliases from the config file; unchanged models stay loaded.

        New models load before anything is swapped, so a bad config leaves the server as it
        was. Other settings (store, limits, API key) need a restart.
        """
        if self.config_file is None:
            raise ApiError(409, "no_config_file", "started without a config file to reload")
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
                raise ApiError(422, "invalid_config", str(e)) from e
            self.registry = Registry({**keep, **loaded}, new.aliases)
            retired = [m for n, m in old.models.items() if keep.get(n) is not m]
            await asyncio.to_thread(old.close, retired)
            gone = sorted(n for n in old.models if n not in new.models)
            return self.alias_table(sorted(loaded), gone)


def get_service(request: Request) -> Service:
    """The running service (a FastAPI dependency); 503 before startup has finished."""
    svc: Service | None = getattr(request.app.state, "svc", None)
    if svc is None:
        raise ApiError(503, "not_ready", "the server is still starting")
    return svc
