"""What stands between the network and the service: one ASGI layer, run before any route.

In order, for every HTTP request: a request id (the client's ``X-Request-ID`` when sane, else a
new one) for the response header, every error body and the log; the allowed ``Host`` names
(a page on another site cannot drive a localhost server through DNS rebinding); the cap on
requests in flight; the credentials, checked *before* the body is read (a client without a key
learns nothing about its body); and the body, bounded in size and in the time it may take to
arrive. ``/health``, ``/ready`` and ``/metrics`` stay open to probes and scrapers whatever the
Host, the key or the load. Refusals use the API's JSON error shape.

Access rules: with ``api_key`` set, every route but the public ones needs it; ``/admin/*`` needs
``admin_api_key`` when that is set, else ``api_key``. With no key at all, ``/admin/*`` answers
only loopback clients of a server bound to loopback, and is refused (403, saying why) otherwise.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import re
import time
import uuid
from collections.abc import Callable

from fastapi.security import HTTPBearer

from polyclip.service.config import Settings
from polyclip.service.domain import REQUEST_ID
from polyclip.service.errors import Refusal, error_body
from polyclip.service.metrics import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

# Declares the Bearer scheme in the OpenAPI document; the check itself is :class:`Edge`'s.
bearer = HTTPBearer(auto_error=False, description="the server's API key, when it has one")

OPS = ("/health", "/ready", "/metrics")  # probes and scrapers: no Host, key or load checks
DOCS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
PAGE = ("/", "/ui", "/ui/app.js", "/ui/style.css")  # the search page; its API calls need the key
# Routes whose bodies are small by nature (queries, filters, names): a lower size cap keeps a
# huge filter from tying up the parser.
SMALL_BODY = re.compile(r"^/(collections(/[^/]+(/search|/points)?)?|admin/.*)$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def allowed_hosts(settings: Settings) -> list[str]:
    """The configured list, else loopback names for a loopback bind and any for other binds."""
    if settings.allowed_hosts is not None:
        return [h.lower() for h in settings.allowed_hosts]
    return list(LOOPBACK_NAMES) if is_loopback(settings.host) else ["*"]


class Edge:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.limits = settings.limits
        self.hosts = allowed_hosts(settings)
        self.in_flight = 0
        key, admin = settings.api_key, settings.admin_api_key
        self.key = key.get_secret_value().encode() if key else None
        self.admin_key = admin.get_secret_value().encode() if admin else self.key
        self.loopback_server = is_loopback(settings.host)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers") or []}
        given = headers.get("x-request-id", b"").decode("latin-1")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        token = REQUEST_ID.set(rid)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            path = scope.get("path", "")
            ops = path in OPS
            if not ops:
                self._check_host(headers)
                if self.in_flight >= self.limits.max_concurrent_requests:
                    raise Refusal(
                        503,
                        "overloaded",
                        f"{self.in_flight} requests in flight, the server's limit; retry shortly",
                        **{"Retry-After": "1"},
                    )
                self._check_access(path, headers, scope)
            limit = self._body_limit(scope)
            declared = headers.get("content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                raise Refusal(413, "body_too_large", _too_large(limit))
            self.in_flight += not ops
            try:
                await self.app(scope, self._bounded(receive, limit), send_with_id)
            finally:
                self.in_flight -= not ops
        except Refusal as e:
            if started:  # the response is under way: nothing better than closing it
                raise
            await _send_error(send_with_id, e, rid)
        finally:
            REQUEST_ID.reset(token)

    # ---- checks ----------------------------------------------------------------------------
    def _check_host(self, headers: dict[str, bytes]) -> None:
        if "*" in self.hosts:
            return
        host = headers.get("host", b"").decode("latin-1").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name not in self.hosts and host not in self.hosts:
            raise Refusal(
                400,
                "invalid_host",
                "this server does not answer for that Host header; set allowed_hosts to add it",
            )

    def _check_access(self, path: str, headers: dict[str, bytes], scope: Scope) -> None:
        if path in DOCS or path in PAGE:
            return
        admin = path.startswith("/admin/") or path == "/admin"
        expected = self.admin_key if admin else self.key
        if expected is not None:
            auth = headers.get("authorization", b"").decode("latin-1")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected):
                raise Refusal(
                    401,
                    "unauthorized",
                    "missing or wrong API key: send `Authorization: Bearer <key>`",
                    **{"WWW-Authenticate": "Bearer"},
                )
            return
        if admin:
            client = (scope.get("client") or ("", 0))[0]
            if not (self.loopback_server and is_loopback(client)):
                raise Refusal(
                    403,
                    "forbidden",
                    "admin routes without a key answer only loopback clients of a server bound "
                    "to loopback; set admin_api_key (or api_key) to use them from elsewhere",
                )

    def _body_limit(self, scope: Scope) -> int:
        small = scope.get("method") != "GET" and SMALL_BODY.match(scope.get("path", ""))
        path = scope.get("path", "")
        upserts = scope.get("method") == "POST" and path.endswith("/points")
        if small and not upserts:
            return min(self.limits.max_query_body_bytes, self.limits.max_body_bytes)
        return self.limits.max_body_bytes

    def _bounded(self, receive: Receive, limit: int) -> Callable[[], object]:
        """The body, cut off past ``limit`` bytes or past the read deadline (slow clients)."""
        deadline = time.monotonic() + self.limits.request_read_timeout_s
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    message = await receive()
            except TimeoutError:
                seconds = self.limits.request_read_timeout_s
                raise Refusal(  # the rest of the body may still come: close, not resync
                    408,
                    "request_timeout",
                    f"the request body did not arrive within {seconds} s",
                    Connection="close",
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # chunked uploads declare no length
                    raise Refusal(413, "body_too_large", _too_large(limit), Connection="close")
            return message

        return bounded


def _too_large(limit: int) -> str:
    return f"request body is over the limit of {limit} bytes for this route"


async def _send_error(send: Send, e: Refusal, rid: str) -> None:
    body = json.dumps(error_body(e.code, e.message, request_id=rid, status=e.status)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.lower().encode(), v.encode()) for k, v in (e.headers or {}).items()]
    await send({"type": "http.response.start", "status": e.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
