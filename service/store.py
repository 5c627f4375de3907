"""The vector store seen by the service: collections of points with one named vector per space.

Two backends with the same semantics, both the Qdrant engine:
:class:`~polyclip.service.store_edge.EdgeStore` (embedded, in-process, the default) and
:class:`~polyclip.service.store_server.ServerStore` (a Qdrant server through ``qdrant-client``,
when ``QDRANT_URL`` is set). A collection records, per embedding space, its named vector,
dimension and index model, so the service can tell whether a query model may search it without
asking the caller to know the layout.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from uuid import UUID

from polyclip.service.filters import FilterSpec

PointId = int | str
# Qdrant's own quantisation of a collection's vectors: int8 scalar (4x smaller, ~lossless with
# rescoring) or binary (32x, needs oversampling and rescoring); originals stay on disk for it.
Quantization = Literal["none", "int8", "binary"]
QUANTIZATIONS: tuple[str, ...] = ("none", "int8", "binary")
COLLECTION_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # also a directory name: no dots, no /
_VECTOR_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class StoreError(Exception):
    """The store failed or is unreachable (HTTP 503)."""


class CollectionNotFound(StoreError):
    """No collection by that name (HTTP 404)."""


class CollectionExists(StoreError):
    """A collection by that name already exists (HTTP 409)."""


class CollectionQuarantined(StoreError):
    """The collection could not be opened at start; the others serve (HTTP 503)."""


class StoreRefused(StoreError):
    """The engine refused the input of this call (HTTP 422), unlike a failing store (503)."""


def vector_name(space: str) -> str:
    """The named vector for an embedding space: the space id, made safe for any backend."""
    return _VECTOR_UNSAFE.sub("_", space).strip("_") or "default"


def normalize_id(pid: Any) -> PointId:
    """Qdrant returns UUID objects or strings; the API speaks ints and canonical UUID strings."""
    return pid if isinstance(pid, int) else str(UUID(str(pid)))


@dataclass(frozen=True)
class SpaceIndex:
    """One named vector of a collection: which space it holds and which model fills it."""

    space: str
    vector: str
    dimension: int
    model: str  # the index model as given (often an alias, so re-pointing it re-routes upserts)


@dataclass(frozen=True)
class CollectionMeta:
    name: str
    spaces: tuple[SpaceIndex, ...]
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    quantization: str = "none"  # one of QUANTIZATIONS, for every vector of the collection

    def space(self, space: str) -> SpaceIndex | None:
        return next((s for s in self.spaces if s.space == space), None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CollectionMeta:
        spaces = tuple(SpaceIndex(**s) for s in data["spaces"])
        return cls(
            name=data["name"],
            spaces=spaces,
            created=data.get("created", ""),
            quantization=data.get("quantization", "none"),
        )


@dataclass(frozen=True)
class QuantizedSearch:
    """How a search uses a quantised collection (Qdrant's ``QuantizationSearchParams``):
    ``oversampling`` × limit candidates by the quantised vectors, re-scored with the originals
    when ``rescore``; ``ignore`` searches the originals only. Without rescoring, scores are the
    quantised similarity (for binary: a count of agreeing bits), not a cosine."""

    rescore: bool = True
    oversampling: float | None = None
    ignore: bool = False

    def search_params(self, models: Any) -> Any:
        """``SearchParams`` of ``models``: qdrant-client's or qdrant-edge's, which share names."""
        q = models.QuantizationSearchParams(
            ignore=self.ignore, rescore=self.rescore, oversampling=self.oversampling
        )
        return models.SearchParams(quantization=q)


@dataclass(frozen=True)
class PointRecord:
    id: PointId
    vectors: dict[str, list[float]]  # named vector -> values
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    id: PointId
    score: float
    payload: dict[str, Any]


class Store(Protocol):
    """Blocking calls (the service runs them in threads); errors are :class:`StoreError`."""

    kind: str  # "edge" or "server"
    quarantined: dict[str, str]  # collections that failed to open → why (embedded store)

    def ping(self) -> None: ...

    def create(self, meta: CollectionMeta) -> None: ...

    def get(self, name: str) -> CollectionMeta: ...

    def names(self) -> list[str]: ...

    def count(self, name: str) -> int: ...

    def indexed(self, name: str) -> int: ...  # vectors in indexed (and quantised) segments

    def drop(self, name: str) -> None: ...

    def upsert(self, name: str, points: list[PointRecord]) -> None: ...

    def delete_points(
        self, name: str, ids: list[PointId] | None, flt: FilterSpec | None
    ) -> int: ...

    def search(
        self,
        name: str,
        vector: str,
        query: list[float],
        limit: int,
        flt: FilterSpec | None,
        quantized: QuantizedSearch | None = None,
    ) -> list[Hit]: ...

    def close(self) -> None: ...
