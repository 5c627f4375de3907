"""Collection routes: create, inspect, drop, upsert points, delete points, search."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from polyclip.service.collections import CollectionInfo, PointInput, SearchResult
from polyclip.service.deps import Svc
from polyclip.service.routes_embed import TRUNCATED_HEADER
from polyclip.service.schemas import (
    CollectionList,
    CollectionOut,
    CreateCollectionRequest,
    DeletePointsRequest,
    DeletePointsResponse,
    HitOut,
    SearchRequest,
    SearchResponse,
    ShadowOut,
    SpaceOut,
    UpsertRequest,
    UpsertResponse,
)
from polyclip.service.security import bearer
from polyclip.service.store import COLLECTION_NAME, Hit, QuantizedSearch

router = APIRouter(prefix="/collections", dependencies=[Depends(bearer)], tags=["collections"])
Name = Annotated[str, Path(pattern=COLLECTION_NAME)]


def _collection(info: CollectionInfo) -> CollectionOut:
    meta = info.meta
    return CollectionOut(
        name=meta.name,
        store=info.store,
        quantization=meta.quantization,  # type: ignore[arg-type]
        spaces=[SpaceOut(**vars(s)) for s in meta.spaces],
        points_count=info.points_count,
        indexed_vectors_count=info.indexed_vectors_count,
        created=meta.created,
    )


def _hits(hits: list[Hit]) -> list[HitOut]:
    return [HitOut(id=h.id, score=h.score, payload=h.payload) for h in hits]


@router.post("", response_model=CollectionOut, status_code=201)
async def create_collection(body: CreateCollectionRequest, svc: Svc) -> CollectionOut:
    """A collection indexed in the space of each given model (one named vector per space)."""
    refs = body.model if isinstance(body.model, list) else [body.model]
    return _collection(await svc.collections.create(body.name, refs, body.quantization))


@router.get("", response_model=CollectionList)
async def list_collections(svc: Svc) -> CollectionList:
    return CollectionList(collections=await svc.collections.names())


@router.get("/{name}", response_model=CollectionOut)
async def get_collection(name: Name, svc: Svc) -> CollectionOut:
    return _collection(await svc.collections.describe(name))


@router.delete("/{name}", status_code=204)
async def delete_collection(name: Name, svc: Svc) -> Response:
    await svc.collections.drop(name)
    return Response(status_code=204)


@router.post("/{name}/points", response_model=UpsertResponse)
async def upsert_points(
    name: Name, body: UpsertRequest, response: Response, svc: Svc
) -> UpsertResponse:
    """Embed texts/images with the collection's index model(s) and upsert; returns the ids."""
    items = [PointInput(it.id, it.text, it.image, it.payload) for it in body.items]
    ids, truncated = await svc.collections.upsert(name, items, body.model)
    if truncated:
        response.headers[TRUNCATED_HEADER] = ",".join(map(str, truncated))
    return UpsertResponse(collection=name, ids=ids, count=len(ids), truncated=truncated)


@router.delete("/{name}/points", response_model=DeletePointsResponse)
async def delete_points(name: Name, body: DeletePointsRequest, svc: Svc) -> DeletePointsResponse:
    """Delete by ``ids`` or by ``filter``; reports how many points existed and were removed."""
    ids = None if body.ids is None else [i if isinstance(i, int) else str(i) for i in body.ids]
    deleted = await svc.collections.delete_points(name, ids, body.filter)
    return DeletePointsResponse(collection=name, deleted=deleted)


@router.post("/{name}/search", response_model=SearchResponse)
async def search(name: Name, body: SearchRequest, svc: Svc) -> SearchResponse:
    """Nearest points to a text or image query; the query model must share a space with the
    collection (a student may query its teacher's index); ``shadow`` compares two models."""
    found: SearchResult = await svc.collections.search(
        name,
        text=body.query.text,
        image=body.query.image,
        model=body.model,
        limit=body.limit,
        flt=body.filter,
        lang=body.lang,
        shadow=body.shadow,
        quantized=None
        if body.quantization is None
        else QuantizedSearch(**body.quantization.model_dump()),
    )
    shadow = None
    if found.shadow is not None:
        s = found.shadow
        shadow = ShadowOut(
            model=s.model, space=s.space, overlap=s.overlap, k=s.k, results=_hits(s.hits)
        )
    return SearchResponse(
        collection=name,
        model=found.model,
        space=found.space,
        results=_hits(found.hits),
        shadow=shadow,
    )
