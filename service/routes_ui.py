"""The search page: ``/`` → ``/ui``, static files shipped in the package, no build step.

The page's own routes are public (the API calls it makes need the key as usual) and are served
with a Content-Security-Policy that allows only this origin's script, style and API, and images
from ``data:`` URIs: results are client-written payloads, rendered as text.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

router = APIRouter(include_in_schema=False)
PAGES = {"/ui": ("index.html", "text/html"), "/ui/app.js": ("app.js", "text/javascript"),
         "/ui/style.css": ("style.css", "text/css")}  # fmt: skip
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_UI = files("polyclip.service") / "ui"


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


def _page(path: str) -> Response:
    name, media = PAGES[path]
    return Response((_UI / name).read_bytes(), media_type=f"{media}; charset=utf-8",
                    headers=HEADERS)  # fmt: skip


for _path in PAGES:
    router.add_api_route(_path, lambda p=_path: _page(p), methods=["GET"])
