"""The errors the service core raises, in its own terms; ``errors.py`` maps them to HTTP once.

Each carries a stable snake_case ``code`` clients branch on, a ``message`` that says what to do
and, when one input is at fault, the ``field`` that names it (``texts[3]``, ``query.image``).
"""

from __future__ import annotations

from contextvars import ContextVar

from polyclip.encoders.errors import PolyclipError

# The id of the request being served, set at the edge: the core puts it in the log lines of
# failures whose details stay out of the response, so an operator can find them.
REQUEST_ID: ContextVar[str] = ContextVar("polyclip_request_id", default="-")


def request_id() -> str:
    return REQUEST_ID.get()


class ServiceError(PolyclipError):
    """Base class: a request the service cannot serve as asked."""

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class BadInput(ServiceError):
    """The input is invalid, or names a model whose space the collection does not hold."""


class TooLarge(ServiceError):
    """Over a size limit: items, characters, bytes, pixels."""


class NotFound(ServiceError):
    """No such model, alias or collection."""


class Conflict(ServiceError):
    """The request contradicts the current state (a collection that exists, a model name)."""


class Unauthorized(ServiceError):
    """Missing or wrong credentials."""


class Forbidden(ServiceError):
    """Credentials are fine, or absent on purpose, but this caller may not do this."""


class UnsupportedMedia(ServiceError):
    """A body in a content type the route does not read."""


class Overloaded(ServiceError):
    """Backpressure: the model's queue is full; retry after ``retry_after_s``."""

    def __init__(self, code: str, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(code, message)
        self.retry_after_s = retry_after_s


class Unavailable(ServiceError):
    """Not ready, shutting down, or the store is unreachable."""


class Timeout(ServiceError):
    """The model did not answer within the request timeout."""
