"""HTTP at the edge: every failure becomes one JSON shape, OpenAI's extended with polyclip's::

    {"error": {"message", "type", "param", "code", "field"?, "request_id"}}

Clients branch on ``code`` (stable, snake_case) and show ``message`` (says what to do);
``field`` (and OpenAI's ``param``) points at the offending input (``texts[3]``,
``query.image``) when there is one; ``type`` is OpenAI's error class, so the OpenAI SDKs raise
the right exception with the message; ``request_id`` finds the server's log line. The core
raises :mod:`polyclip.service.domain` errors; this is the one place they meet status codes.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from polyclip.encoders.errors import EncoderError
from polyclip.service import domain
from polyclip.service.domain import REQUEST_ID

log = logging.getLogger(__name__)

# Codes for errors raised by the framework itself (routing, body parsing, size limits).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


_TYPE_TAGS = {"str", "int", "float", "bool", "none", "uuid", "list", "dict", "json-or-python"}


STATUS: dict[type[domain.ServiceError], int] = {
    domain.BadInput: 422,
    domain.TooLarge: 413,
    domain.NotFound: 404,
    domain.Conflict: 409,
    domain.Unauthorized: 401,
    domain.Forbidden: 403,
    domain.UnsupportedMedia: 415,
    domain.Overloaded: 429,
    domain.Unavailable: 503,
    domain.Timeout: 504,
}


def status_of(exc: domain.ServiceError) -> int:
    return next(code for cls, code in STATUS.items() if isinstance(exc, cls))


class Refusal(StarletteHTTPException):
    """A request refused at the edge (host, load, credentials, body size or read time).

    An HTTPException so that FastAPI passes it on when it is raised while a body is read,
    instead of turning it into a generic 400.
    """

    def __init__(self, status: int, code: str, message: str, **headers: str) -> None:
        super().__init__(status, message, headers or None)
        self.status, self.code, self.message = status, code, message


def openai_type(status: int) -> str:
    """OpenAI's ``error.type`` for a status (what its SDKs and clients expect)."""
    if status >= 500:
        return "server_error"
    return {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error"
    )


def error_body(
    code: str,
    message: str,
    field: str | None = None,
    request_id: str | None = None,
    status: int = 400,
) -> dict[str, Any]:
    err: dict[str, Any] = {"message": message, "type": openai_type(status), "param": field,
                           "code": code}  # fmt: skip
    if field:
        err["field"] = field
    if request_id:
        err["request_id"] = request_id
    return {"error": err}


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_body(code, message, field, REQUEST_ID.get(None) or None, status)
    return JSONResponse(body, status_code=status, headers=headers)


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "items", 2, "text")`` → ``items[2].text``: how a client names the input.

    Pydantic also puts union members (``str``, ``list[str]``, ``function-after[...]``) in the
    location; they name no input and are dropped.
    """
    out = ""
    for i, part in enumerate(loc):
        if (i == 0 and part in ("body", "query", "path", "header")) or (
            isinstance(part, str) and (part in _TYPE_TAGS or "[" in part)
        ):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, domain.ServiceError)
    headers = None
    if isinstance(exc, domain.Overloaded):
        headers = {"Retry-After": str(exc.retry_after_s)}
    elif isinstance(exc, domain.Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    return error_response(status_of(exc), exc.code, exc.message, exc.field, headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    # The most specific problem: a union (``str | list[str]``) reports one error per member,
    # and the member with the longest location is the one the client meant.
    first = max(errors, key=lambda e: len(field_path(e.get("loc", ()))), default=None) or {
        "loc": (),
        "msg": "invalid request",
        "type": "",
    }
    if first.get("type") == "json_invalid":
        return error_response(400, "invalid_json", f"body is not valid JSON: {first['msg']}")
    field = field_path(first.get("loc", ()))
    message = str(first.get("msg", "invalid request"))
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return error_response(422, "invalid_request", message, field or None)


async def _refusal(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refusal)
    return error_response(exc.status, exc.code, exc.message, headers=exc.headers)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI's body parser, on raw bytes
        return error_response(422, "invalid_text", "the body is not valid UTF-8 text")
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _encoder_error(_: Request, exc: Exception) -> JSONResponse:
    return error_response(422, "invalid_input", str(exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    rid = REQUEST_ID.get(None)
    log.error("unhandled error on %s %s [%s]", request.method, request.url.path, rid, exc_info=exc)
    return error_response(
        500, "internal_error", f"internal server error; the server log has it under {rid}"
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(domain.ServiceError, _service_error)
    app.add_exception_handler(Refusal, _refusal)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(EncoderError, _encoder_error)
    app.add_exception_handler(Exception, _unexpected)
