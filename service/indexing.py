"""Collections, upserts and searches, with the one rule that makes students useful here:

a model may index or query a collection iff its embedding space is one the collection holds
(and its dimension matches). A student distilled into the teacher's space reports the teacher's
space id, so it searches the teacher's index as is; anything else is a 422 that says why.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from service.config import ConfigError, DemoConfig
from service.engine import Service
from service.errors import ApiError
from service.filters import FilterSpec, with_lang
from service.images import load_images
from service.registry import ServedModel
from service.schemas import (
    CollectionOut,
    HitOut,
    PointIn,
    QueryIn,
    SearchRequest,
    SearchResponse,
    ShadowOut,
    SpaceOut,
)
from service.store import CollectionMeta, Hit, PointId, PointRecord, SpaceIndex, vector_name

log = logging.getLogger(__name__)
UPSERT_CHUNK = 256  # points per store call


def space_index(meta: CollectionMeta, model: ServedModel, ref: str, field: str) -> SpaceIndex:
    """The collection's named vector for ``model``'s space, or a 422 explaining the mismatch."""
    idx = meta.space(model.space)
    if idx is None:
        spaces = [s.space for s in meta.spaces]
        raise ApiError(
            422,
            "space_mismatch",
            f"model {ref!r} embeds into space {model.space!r}; collection {meta.name!r} is "
            f"indexed in spaces {spaces}; use a model distilled into "
            f"{' or '.join(repr(s) for s in spaces)}",
            field=field,
        )
    if idx.dimension != model.dimension:
        raise ApiError(
            422,
            "dimension_mismatch",
            f"model {ref!r} gives {model.dimension}-d vectors in space {model.space!r}, but "
            f"collection {meta.name!r} stores {idx.dimension}-d ones there",
            field=field,
        )
    return idx


async def create_collection(svc: Service, name: str, refs: list[str]) -> CollectionMeta:
    spaces: dict[str, SpaceIndex] = {}
    for i, ref in enumerate(refs):
        field = "model" if len(refs) == 1 else f"model[{i}]"
        m = svc.registry.resolve(ref, field=field)
        if m.space in spaces:
            raise ApiError(
                422,
                "duplicate_space",
                f"models {spaces[m.space].model!r} and {ref!r} share space {m.space!r}; "
                "a collection holds one vector per space",
                field=field,
            )
        spaces[m.space] = SpaceIndex(m.space, vector_name(m.space), m.dimension, ref)
    if len({s.vector for s in spaces.values()}) != len(spaces):
        raise ApiError(422, "duplicate_space", "two space ids map to one vector name", "model")
    meta = CollectionMeta(name, tuple(spaces.values()))
    await svc.store_call("create", svc.store.create, meta)
    return meta


async def describe_collection(svc: Service, name: str) -> CollectionOut:
    meta = await svc.store_call("get", svc.store.get, name)
    count = await svc.store_call("count", svc.store.count, name)
    return CollectionOut(
        name=meta.name,
        store=svc.store.kind,
        spaces=[SpaceOut(**vars(s)) for s in meta.spaces],
        points_count=count,
        created=meta.created,
    )


def _index_plan(
    svc: Service, meta: CollectionMeta, ref: str | None
) -> list[tuple[SpaceIndex, ServedModel]]:
    """Which model fills which named vector; every point gets a vector in every space."""
    if ref is None:
        plan = []
        for s in meta.spaces:
            m = svc.registry.resolve(s.model)
            if (m.space, m.dimension) != (s.space, s.dimension):
                raise ApiError(
                    422,
                    "space_mismatch",
                    f"index model {s.model!r} now embeds into space {m.space!r} ({m.dimension}-d),"
                    f" but it indexed space {s.space!r} ({s.dimension}-d) of {meta.name!r}; "
                    "re-point the alias or pass `model`",
                    field="model",
                )
            plan.append((s, m))
        return plan
    model = svc.registry.resolve(ref)
    idx = space_index(meta, model, ref, "model")
    if len(meta.spaces) > 1:
        raise ApiError(
            422,
            "missing_spaces",
            f"collection {meta.name!r} is indexed in spaces {[s.space for s in meta.spaces]} "
            "and every point needs a vector in each; omit `model` to use its index models",
            field="model",
        )
    return [(idx, model)]


async def upsert_points(
    svc: Service, name: str, items: list[PointIn], ref: str | None
) -> tuple[list[PointId], list[int]]:
    """Embed ``items`` with the index model(s) and upsert them; returns ids and truncations."""
    svc.check_count(len(items), "items")
    meta = await svc.store_call("get", svc.store.get, name)
    plan = _index_plan(svc, meta, ref)
    texts = {i: it.text for i, it in enumerate(items) if it.text is not None}
    pics = {i: it.image for i, it in enumerate(items) if it.image is not None}
    text_at, pic_at = list(texts), list(pics)
    images = await load_images(list(pics.values()), svc.limits, [f"items[{i}].image" for i in pics])
    vectors: list[dict[str, list[float]]] = [{} for _ in items]
    truncated: set[int] = set()
    for idx, model in plan:  # decoded once, embedded by each index model
        if texts:
            fields = [f"items[{i}].text" for i in text_at]
            out = await svc.embed_texts(model, list(texts.values()), "passage", fields)
            truncated.update(text_at[j] for j in out.truncated)
            _place(vectors, text_at, idx.vector, out.rows)
        if pics:
            rows = await svc.embed_images(model, images, "model")
            _place(vectors, pic_at, idx.vector, rows)
    ids: list[PointId] = [_point_id(it) for it in items]
    points = [
        PointRecord(pid, vec, it.payload or {})
        for pid, vec, it in zip(ids, vectors, items, strict=True)
    ]
    for start in range(0, len(points), UPSERT_CHUNK):
        await svc.store_call("upsert", svc.store.upsert, name, points[start : start + UPSERT_CHUNK])
    return ids, sorted(truncated)


def _point_id(item: PointIn) -> PointId:
    if item.id is None:
        return str(uuid.uuid4())
    return item.id if isinstance(item.id, int) else str(item.id)


def _place(
    vectors: list[dict[str, list[float]]], where: list[int], name: str, rows: np.ndarray
) -> None:
    for i, row in zip(where, rows, strict=True):
        vectors[i][name] = row.tolist()


async def delete_points(
    svc: Service, name: str, ids: list[Any] | None, flt: FilterSpec | None
) -> int:
    if ids is not None:
        svc.check_count(len(ids), "ids")
        ids = [i if isinstance(i, int) else str(i) for i in ids]
    return await svc.store_call("delete_points", svc.store.delete_points, name, ids, flt)


async def _query_vector(
    svc: Service, model: ServedModel, query: QueryIn, image: Any
) -> list[float]:
    if query.text is not None:
        out = await svc.embed_texts(model, [query.text], "query", ["query.text"])
        return out.rows[0].tolist()
    return (await svc.embed_images(model, [image], "query.image"))[0].tolist()


async def search(svc: Service, name: str, req: SearchRequest) -> SearchResponse:
    """Search with the query model; with ``shadow``, also with another model, and compare."""
    meta = await svc.store_call("get", svc.store.get, name)
    flt = with_lang(req.filter, req.lang)
    image = None
    if req.query.image is not None:
        image = (await load_images([req.query.image], svc.limits, ["query.image"]))[0]

    async def run(ref: str, field: str) -> tuple[ServedModel, SpaceIndex, list[Hit]]:
        model = svc.registry.resolve(ref, field=field)
        idx = space_index(meta, model, ref, field)
        vec = await _query_vector(svc, model, req.query, image)
        hits = await svc.store_call(
            "search", svc.store.search, name, idx.vector, vec, req.limit, flt
        )
        return model, idx, hits

    ref = req.model or meta.spaces[0].model
    if req.shadow is None:
        model, idx, hits = await run(ref, "model")
        return SearchResponse(
            collection=name, model=ref, space=idx.space, results=_hits(hits), shadow=None
        )
    (model, idx, hits), (smodel, sidx, shits) = await asyncio.gather(
        run(ref, "model"), run(req.shadow, "shadow")
    )
    k = len(hits)
    overlap = len({h.id for h in hits} & {h.id for h in shits}) / k if k else 1.0
    svc.metrics.shadow_overlap.labels(name, model.name, smodel.name).observe(overlap)
    shadow = ShadowOut(
        model=req.shadow, space=sidx.space, overlap=overlap, k=k, results=_hits(shits)
    )
    return SearchResponse(
        collection=name, model=ref, space=idx.space, results=_hits(hits), shadow=shadow
    )


def _hits(hits: list[Hit]) -> list[HitOut]:
    return [HitOut(id=h.id, score=h.score, payload=h.payload) for h in hits]


# ---- demo collection -------------------------------------------------------------------------
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


async def index_demo(svc: Service, demo: DemoConfig) -> None:
    """Create and fill the demo collection unless it is already complete (restarts)."""
    texts = await asyncio.to_thread(read_demo_texts, demo)
    if demo.collection in await svc.store_call("list", svc.store.names):
        if await svc.store_call("count", svc.store.count, demo.collection) >= len(texts):
            log.info("demo collection %s is already indexed", demo.collection)
            return
    else:
        await create_collection(svc, demo.collection, [demo.model])
    extra = {"lang": demo.lang} if demo.lang else {}
    step = svc.limits.max_items
    for start in range(0, len(texts), step):
        items = [
            PointIn(id=start + i, text=t, payload={"text": t, **extra})
            for i, t in enumerate(texts[start : start + step])
        ]
        await upsert_points(svc, demo.collection, items, None)
    log.info("demo collection %s: %d texts indexed", demo.collection, len(texts))
