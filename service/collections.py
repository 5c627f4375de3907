"""Collections, upserts and searches, with the one rule that makes students useful here:

a model may index or query a collection iff its embedding space is one the collection holds
(and its dimension matches). A student distilled into the teacher's space reports the teacher's
space id, so it searches the teacher's index as is; anything else is a ``space_mismatch``.

Collection metadata (which spaces, which named vectors) is kept here, so a search is one store
call. It is dropped on create and drop, and fetched again when the store reports the collection
missing or failing: with a Qdrant server several replicas share one store, and another replica
may have dropped or re-created the collection since.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from polyclip.service.config import ConfigError, DemoConfig
from polyclip.service.domain import BadInput, Conflict, NotFound, Unavailable, request_id
from polyclip.service.filters import FilterSpec, with_lang
from polyclip.service.registry import ServedModel
from polyclip.service.store import (
    CollectionExists,
    CollectionMeta,
    CollectionNotFound,
    CollectionQuarantined,
    Hit,
    PointId,
    PointRecord,
    QuantizedSearch,
    SpaceIndex,
    Store,
    StoreError,
    StoreRefused,
    vector_name,
)
from polyclip.service.validation import check_payload

if TYPE_CHECKING:
    from polyclip.service.core import Service

log = logging.getLogger(__name__)
T = TypeVar("T")
UPSERT_CHUNK = 256  # points per store call


class CollectionGone(NotFound):
    """The store says the collection is not there (maybe dropped by another replica)."""


class StoreDown(Unavailable):
    """The store failed or cannot be reached."""


@dataclass(frozen=True)
class PointInput:
    id: int | str | None  # None: a random UUID is made
    text: str | None
    image: str | bytes | None
    payload: dict[str, Any] | None


@dataclass(frozen=True)
class CollectionInfo:
    meta: CollectionMeta
    store: str
    points_count: int
    indexed_vectors_count: int


@dataclass(frozen=True)
class Shadow:
    model: str
    space: str
    overlap: float  # |top-k ∩ shadow top-k| / k
    k: int
    hits: list[Hit]


@dataclass(frozen=True)
class SearchResult:
    collection: str
    model: str
    space: str
    hits: list[Hit]
    shadow: Shadow | None


class Collections:
    """The store behind the service, with the space rules and the metadata cache."""

    def __init__(self, svc: Service, store: Store) -> None:
        self.svc = svc
        self.store = store
        self._meta: dict[str, CollectionMeta] = {}
        # Creates and drops run one at a time: a drop finishes (files gone) before a create of
        # the same name starts, and the collection quota cannot be raced past.
        self._lifecycle = asyncio.Lock()

    @property
    def kind(self) -> str:
        return self.store.kind

    # ---- store access ----------------------------------------------------------------------
    async def _call(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        """A blocking store call in a thread, timed; store errors become domain errors.

        What the engine said is logged with the request id, never sent to the client: it can
        name paths and internals. Input the engine refused is a 422, a failing store a 503.
        """
        start = time.perf_counter()
        status = "ok"
        try:
            return await asyncio.to_thread(fn, *args)
        except CollectionNotFound as e:
            status = "not_found"
            raise CollectionGone("collection_not_found", str(e), field="name") from e
        except CollectionExists as e:
            status = "exists"
            raise Conflict("collection_exists", str(e), field="name") from e
        except CollectionQuarantined as e:
            status = "quarantined"
            raise Unavailable("collection_quarantined", str(e), field="name") from e
        except StoreRefused as e:
            status = "refused"
            log.warning("store %s refused the input [%s]: %s", op, request_id(), e)
            raise BadInput(
                "invalid_request",
                f"the store refused this input (request id {request_id()})",
            ) from e
        except StoreError as e:
            status = "error"
            log.error("store %s failed [%s]: %s", op, request_id(), e)
            raise StoreDown(
                "store_unavailable",
                f"the store failed; the server log has the details (request id {request_id()})",
            ) from e
        finally:
            self.svc.metrics.store_duration.labels(op, status).observe(time.perf_counter() - start)

    async def meta(self, name: str) -> CollectionMeta:
        """The collection's spaces, from the cache or (once) from the store."""
        meta = self._meta.get(name)
        if meta is None:
            meta = self._meta[name] = await self._call("get", self.store.get, name)
        return meta

    async def _with_meta(self, name: str, op: Callable[[CollectionMeta], Awaitable[T]]) -> T:
        """Run ``op`` on the cached metadata; if the store fails, refetch and retry once."""
        meta = await self.meta(name)
        try:
            return await op(meta)
        except (CollectionGone, StoreDown):
            self._meta.pop(name, None)
            fresh = await self.meta(name)  # CollectionGone if it really is gone
            if fresh == meta:
                raise
            log.info("collection %s changed in the store; retrying with its new layout", name)
            return await op(fresh)

    # ---- the space rule --------------------------------------------------------------------
    def space_index(
        self, meta: CollectionMeta, model: ServedModel, ref: str, field: str
    ) -> SpaceIndex:
        """The collection's named vector for ``model``'s space, or why it has none."""
        idx = next((s for s in meta.spaces if self.svc.registry.holds(s.space, model)), None)
        if idx is None:
            spaces = [s.space for s in meta.spaces]
            raise BadInput(
                "space_mismatch",
                f"model {ref!r} embeds into space {model.space!r}; collection {meta.name!r} is "
                f"indexed in spaces {spaces}; use a model distilled into "
                f"{' or '.join(repr(s) for s in spaces)}",
                field=field,
            )
        if idx.dimension != model.dimension:
            raise BadInput(
                "dimension_mismatch",
                f"model {ref!r} gives {model.dimension}-d vectors in space {model.space!r}, but "
                f"collection {meta.name!r} stores {idx.dimension}-d ones there",
                field=field,
            )
        return idx

    def _index_plan(
        self, meta: CollectionMeta, ref: str | None
    ) -> list[tuple[SpaceIndex, ServedModel]]:
        """Which model fills which named vector; every point gets a vector in every space."""
        if ref is None:
            plan = []
            for s in meta.spaces:
                m = self.svc.registry.resolve(s.model)
                if not self.svc.registry.holds(s.space, m) or m.dimension != s.dimension:
                    raise BadInput(
                        "space_mismatch",
                        f"index model {s.model!r} now embeds into space {m.space!r} "
                        f"({m.dimension}-d), but it indexed space {s.space!r} ({s.dimension}-d) "
                        f"of {meta.name!r}; re-point the alias or pass `model`",
                        field="model",
                    )
                plan.append((s, m))
            return plan
        model = self.svc.registry.resolve(ref)
        idx = self.space_index(meta, model, ref, "model")
        if len(meta.spaces) > 1:
            raise BadInput(
                "missing_spaces",
                f"collection {meta.name!r} is indexed in spaces {[s.space for s in meta.spaces]} "
                "and every point needs a vector in each; omit `model` to use its index models",
                field="model",
            )
        return [(idx, model)]

    # ---- collections -----------------------------------------------------------------------
    async def create(
        self, name: str, refs: list[str], quantization: str = "none"
    ) -> CollectionInfo:
        """A collection indexed in the space of each model of ``refs`` (one vector per space),
        its vectors quantised by the store as ``quantization`` says."""
        spaces: list[SpaceIndex] = []
        for i, ref in enumerate(refs):
            field = "model" if len(refs) == 1 else f"model[{i}]"
            m = self.svc.registry.resolve(ref, field=field)
            same = next((s for s in spaces if self.svc.registry.holds(s.space, m)), None)
            if same is not None:
                raise BadInput(
                    "duplicate_space",
                    f"models {same.model!r} and {ref!r} share space {m.space!r}; "
                    "a collection holds one vector per space",
                    field=field,
                )
            spaces.append(SpaceIndex(m.space, vector_name(m.space), m.dimension, ref))
        if len({s.vector for s in spaces}) != len(spaces):
            raise BadInput("duplicate_space", "two space ids map to one vector name", field="model")
        meta = CollectionMeta(name, tuple(spaces), quantization=quantization)
        async with self._lifecycle:
            limit = self.svc.limits.max_collections
            if name not in await self.names() and len(await self.names()) >= limit:
                raise Conflict(
                    "too_many_collections",
                    f"the server holds its maximum of {limit} collections; drop one first",
                    field="name",
                )
            self._meta.pop(name, None)
            await self._call("create", self.store.create, meta)
            self._meta[name] = meta
        return await self.describe(name)

    async def describe(self, name: str) -> CollectionInfo:
        async def count(meta: CollectionMeta) -> CollectionInfo:
            n = await self._call("count", self.store.count, name)
            indexed = await self._call("indexed", self.store.indexed, name)
            return CollectionInfo(meta, self.kind, n, indexed)

        return await self._with_meta(name, count)

    async def names(self) -> list[str]:
        return await self._call("list", self.store.names)

    async def drop(self, name: str) -> None:
        async with self._lifecycle:
            self._meta.pop(name, None)
            await self._call("drop", self.store.drop, name)
        self.svc.metrics.forget_collection(name)
        self.svc.metrics.quarantined.set(len(self.store.quarantined))

    # ---- points ----------------------------------------------------------------------------
    async def upsert(
        self, name: str, items: list[PointInput], ref: str | None
    ) -> tuple[list[PointId], list[int]]:
        """Embed ``items`` with the index model(s) and upsert them; returns ids and truncations."""
        self.svc.check_count(len(items), "items")
        limits = self.svc.limits
        for i, it in enumerate(items):
            if it.payload:
                check_payload(
                    it.payload, f"items[{i}].payload", max_depth=limits.max_payload_depth,
                    max_keys=limits.max_payload_keys, max_bytes=limits.max_payload_bytes,
                )  # fmt: skip
        meta = await self.meta(name)  # an unknown collection is a 404 before work on the items
        pics = {i: it.image for i, it in enumerate(items) if it.image is not None}
        if pics:  # every index model must take images before one is decoded
            for _, model in self._index_plan(meta, ref):
                self.svc.require_images(model, "model")
        fields = [f"items[{i}].image" for i in pics]
        images = await self.svc.decode_images(list(pics.values()), fields)
        ids = [_point_id(it) for it in items]

        async def run(meta: CollectionMeta) -> list[int]:
            plan = self._index_plan(meta, ref)
            texts = {i: it.text for i, it in enumerate(items) if it.text is not None}
            text_at, pic_at = list(texts), list(pics)
            vectors: list[dict[str, list[float]]] = [{} for _ in items]
            truncated: set[int] = set()
            for idx, model in plan:  # decoded once, embedded by each index model
                if texts:
                    where = [f"items[{i}].text" for i in text_at]
                    out = await self.svc.embed_texts(model, list(texts.values()), "passage", where)
                    truncated.update(text_at[j] for j in out.truncated)
                    _place(vectors, text_at, idx.vector, out.rows)
                if pics:
                    rows = await self.svc.embed_images(model, images, "model")
                    _place(vectors, pic_at, idx.vector, rows)
            points = [
                PointRecord(pid, vec, it.payload or {})
                for pid, vec, it in zip(ids, vectors, items, strict=True)
            ]
            for start in range(0, len(points), UPSERT_CHUNK):
                chunk = points[start : start + UPSERT_CHUNK]
                await self._call("upsert", self.store.upsert, name, chunk)
            return sorted(truncated)

        return ids, await self._with_meta(name, run)

    async def delete_points(
        self, name: str, ids: list[PointId] | None, flt: FilterSpec | None
    ) -> int:
        """Delete by ids or by filter; how many points existed and were removed."""
        if ids is not None:
            self.svc.check_count(len(ids), "ids")
        return await self._call("delete_points", self.store.delete_points, name, ids, flt)

    async def search(
        self,
        name: str,
        *,
        text: str | None,
        image: str | None,
        model: str | None,
        limit: int,
        flt: FilterSpec | None = None,
        lang: str | None = None,
        shadow: str | None = None,
        quantized: QuantizedSearch | None = None,
    ) -> SearchResult:
        """Search with the query model; with ``shadow``, also with another model, and compare."""
        flt = with_lang(flt, lang)
        meta = await self.meta(name)  # an unknown collection is a 404 before the query is decoded
        picture = None
        if image is not None:  # the query models must take images before it is decoded
            for ref, field in ((model or meta.spaces[0].model, "model"), (shadow, "shadow")):
                if ref is not None:
                    self.svc.require_images(self.svc.registry.resolve(ref, field), field)
            picture = (await self.svc.decode_images([image], ["query.image"]))[0]

        async def query(model: ServedModel) -> list[float]:
            if text is not None:
                out = await self.svc.embed_texts(model, [text], "query", ["query.text"])
                return out.rows[0].tolist()
            return (await self.svc.embed_images(model, [picture], "query.image"))[0].tolist()

        async def one(meta: CollectionMeta, ref: str, field: str) -> tuple[SpaceIndex, list[Hit]]:
            served = self.svc.registry.resolve(ref, field=field)
            idx = self.space_index(meta, served, ref, field)
            vec = await query(served)
            hits = await self._call(
                "search", self.store.search, name, idx.vector, vec, limit, flt, quantized
            )
            return idx, hits

        async def run(meta: CollectionMeta) -> SearchResult:
            ref = model or meta.spaces[0].model
            if shadow is None:
                idx, hits = await one(meta, ref, "model")
                return SearchResult(name, ref, idx.space, hits, None)
            (idx, hits), (sidx, shits) = await asyncio.gather(
                one(meta, ref, "model"), one(meta, shadow, "shadow")
            )
            k = len(hits)
            overlap = len({h.id for h in hits} & {h.id for h in shits}) / k if k else 1.0
            names = (self.svc.registry.resolve(r).name for r in (ref, shadow))
            self.svc.metrics.shadow_overlap.labels(name, *names).observe(overlap)
            compared = Shadow(shadow, sidx.space, overlap, k, shits)
            return SearchResult(name, ref, idx.space, hits, compared)

        return await self._with_meta(name, run)

    # ---- demo collection -------------------------------------------------------------------
    async def index_demo(self, demo: DemoConfig) -> None:
        """Create and fill the demo collection unless it is already complete (restarts)."""
        texts = await asyncio.to_thread(read_demo_texts, demo)
        if demo.collection in await self.names():
            if (await self.describe(demo.collection)).points_count >= len(texts):
                log.info("demo collection %s is already indexed", demo.collection)
                return
        else:
            await self.create(demo.collection, [demo.model])
        extra = {"lang": demo.lang} if demo.lang else {}
        step = self.svc.limits.max_items
        for start in range(0, len(texts), step):
            items = [
                PointInput(start + i, t, None, {"text": t, **extra})
                for i, t in enumerate(texts[start : start + step])
            ]
            await self.upsert(demo.collection, items, None)
        log.info("demo collection %s: %d texts indexed", demo.collection, len(texts))


def _point_id(item: PointInput) -> PointId:
    if item.id is None:
        return str(uuid.uuid4())
    return item.id if isinstance(item.id, int) else str(item.id)


def _place(
    vectors: list[dict[str, list[float]]], where: list[int], name: str, rows: np.ndarray
) -> None:
    for i, row in zip(where, rows, strict=True):
        vectors[i][name] = row.tolist()


def read_demo_texts(demo: DemoConfig) -> list[str]:
    texts = list(demo.texts)
    if demo.data_file is not None:
        path = Path(demo.data_file)
        opener: Any = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                texts += [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise ConfigError(f"demo.data_file {path}: {e}") from e
    return texts[: demo.max_texts] if demo.max_texts else texts
