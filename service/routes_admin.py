"""Operations routes: health, readiness, metrics (public), alias re-pointing and reload."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from polyclip.service.core import Service
from polyclip.service.deps import Svc
from polyclip.service.errors import error_response
from polyclip.service.schemas import AliasRequest, AliasTable
from polyclip.service.security import bearer

public = APIRouter(tags=["ops"])
admin = APIRouter(prefix="/admin", dependencies=[Depends(bearer)], tags=["admin"])
AliasName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


@public.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@public.get("/ready", responses={503: {"description": "models loading, store down or draining"}})
async def ready(request: Request) -> JSONResponse:
    """Readiness: models loaded and the store reachable."""
    svc: Service | None = getattr(request.app.state, "svc", None)
    if svc is None:
        return error_response(503, "not_ready", "models are loading")
    problem = await svc.ready()
    if problem is not None:
        return error_response(503, "not_ready", problem)
    body: dict[str, object] = {"status": "ready", "store": svc.collections.kind}
    quarantined = svc.collections.store.quarantined
    if quarantined:  # served anyway: every other collection works; these need an operator
        body["quarantined"] = dict(quarantined)
    return JSONResponse(body)


@public.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@admin.put("/aliases/{alias}", response_model=AliasTable)
async def set_alias(alias: AliasName, body: AliasRequest, svc: Svc) -> AliasTable:
    """Re-point an alias at another model, now; collections indexed through it keep working
    as long as the new model lives in the same space (a student of the same teacher)."""
    return AliasTable(**vars(svc.set_alias(alias, body.target)))


@admin.post("/reload", response_model=AliasTable)
async def reload(svc: Svc) -> AliasTable:
    """Re-read models and aliases from the config file, loading only what changed."""
    return AliasTable(**vars(await svc.reload()))
