"""The FastAPI app: ``create_app(settings)`` wires routes, limits, metrics and the lifespan.

Startup loads every model (each with its worker thread), opens the store and indexes the demo
collection; only then does /ready answer 200. Shutdown runs after uvicorn has finished the
in-flight requests: the workers drain their queues, then the store is flushed and closed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from polyclip.service.config import Settings, config_path, load_settings
from polyclip.service.core import Service
from polyclip.service.errors import install_error_handlers
from polyclip.service.metrics import Metrics, RequestMetrics
from polyclip.service.routes_admin import admin, public
from polyclip.service.routes_embed import router as embed_router
from polyclip.service.routes_search import router as search_router
from polyclip.service.routes_ui import router as ui_router
from polyclip.service.schemas import ERROR_RESPONSES
from polyclip.service.security import Edge, is_loopback

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return version("polyclip")
    except PackageNotFoundError:
        return "0+unknown"


def create_app(settings: Settings, config_file: Path | None = None) -> FastAPI:
    """A ready-to-run app; ``config_file`` is what ``POST /admin/reload`` re-reads."""
    metrics = Metrics()
    if settings.api_key is None and not is_loopback(settings.host):
        log.warning(
            "serving on %s with no api_key: every client that can reach it may embed, index "
            "and search (admin routes stay refused); set api_key to require one",
            settings.host,
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = await Service.start(settings, metrics, config_file)
        try:
            app.state.svc = svc
            yield
        finally:
            await svc.stop()

    app = FastAPI(
        title="polyclip",
        version=_version(),
        description="Multilingual text encoders in a teacher's embedding space, with search.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.svc = None
    install_error_handlers(app)
    for router in (public, embed_router, search_router, admin, ui_router):
        app.include_router(router)
    app.add_middleware(Edge, settings=settings)
    if settings.cors_origins:  # outside the edge: a preflight carries no credentials
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["authorization", "content-type", "x-request-id"],
            expose_headers=["x-request-id", "x-polyclip-truncated", "retry-after"],
        )
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: counts refusals too
    return app


def create_app_from_env() -> FastAPI:
    """For ``uvicorn --factory`` (several workers): the config comes from POLYCLIP_CONFIG."""
    path = config_path()
    return create_app(load_settings(path), path)
