"""FastAPI dependencies shared by the routers: the running service core."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from polyclip.service.core import Service
from polyclip.service.domain import Unavailable


def get_service(request: Request) -> Service:
    """The running service; ``not_ready`` before startup has finished."""
    svc: Service | None = getattr(request.app.state, "svc", None)
    if svc is None:
        raise Unavailable("not_ready", "the server is still starting")
    return svc


Svc = Annotated[Service, Depends(get_service)]
