"""Collection routes: create, inspect, drop, upsert points, delete points, search."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from service import indexing
from service.engine import Service, get_service
from service.routes_embed import TRUNCATED_HEADER
from service.schemas import (
    CollectionList,
    CollectionOut,
    CreateCollectionRequest,
    DeletePointsRequest,
    DeletePointsResponse,
    SearchRequest,
    SearchResponse,
    UpsertRequest,
    UpsertResponse,
)
from service.security import require_api_key
from service.store import COLLECTION_NAME

router = APIRouter(
    prefix="/collections", dependencies=[Depends(require_api_key)], tags=["collections"]
)
Svc = Annotated[Service, Depends(get_service)]
Name = Annotated[str, Path(pattern=COLLECTION_NAME)]


@router.post("", response_model=CollectionOut, status_code=201)
async def create_collection(body: CreateCollectionRequest, svc: Svc) -> CollectionOut:
    """A collection indexed in the space of each given model (one named vector per space)."""
    refs = body.model if isinstance(body.model, list) else [body.model]
    await indexing.create_collection(svc, body.name, refs)
    return await indexing.describe_collection(svc, body.name)


@router.get("", response_model=CollectionList)
async def list_collections(svc: Svc) -> CollectionList:
    return CollectionList(collections=await svc.store_call("list", svc.store.names))


@router.get("/{name}", response_model=CollectionOut)
async def get_collection(name: Name, svc: Svc) -> CollectionOut:
    return await indexing.describe_collection(svc, name)


@router.delete("/{name}", status_code=204)
async def delete_collection(name: Name, svc: Svc) -> Response:
    await svc.store_call("drop", svc.store.drop, name)
    return Response(status_code=204)


@router.post("/{name}/points", response_model=UpsertResponse)
async def upsert_points(
    name: Name, body: UpsertRequest, response: Response, svc: Svc
) -> UpsertResponse:
    """Embed texts/images with the collection's index model(s) and upsert; returns the ids."""
    ids, truncated = await indexing.upsert_points(svc, name, body.items, body.model)
    if truncated:
        response.headers[TRUNCATED_HEADER] = ",".join(map(str, truncated))
    return UpsertResponse(collection=name, ids=ids, count=len(ids), truncated=truncated)


@router.delete("/{name}/points", response_model=DeletePointsResponse)
async def delete_points(name: Name, body: DeletePointsRequest, svc: Svc) -> DeletePointsResponse:
    """Delete by ``ids`` or by ``filter``; reports how many points existed and were removed."""
    deleted = await indexing.delete_points(svc, name, body.ids, body.filter)
    return DeletePointsResponse(collection=name, deleted=deleted)


@router.post("/{name}/search", response_model=SearchResponse)
async def search(name: Name, body: SearchRequest, svc: Svc) -> SearchResponse:
    """Nearest points to a text or image query; the query model must share a space with the
    collection (a student may query its teacher's index); ``shadow`` compares two models."""
    return await indexing.search(svc, name, body)
