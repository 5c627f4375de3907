"""A Qdrant server as the store, through ``qdrant-client``: what to use with several workers.

The collection's spaces live in Qdrant's own collection metadata (server 1.16 or newer), so
every worker and every restart sees the same layout. Each operation is one Qdrant call (the
service core caches the layout); a collection that is gone is reported as
:class:`CollectionNotFound`, so the core can tell "dropped elsewhere" from "server down".
``QDRANT_URL=:memory:`` runs qdrant-client's local engine in-process: the tests use it to
exercise this path without a server.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import UnexpectedResponse

from polyclip.service.filters import FilterSpec, to_client
from polyclip.service.store import (
    CollectionExists,
    CollectionMeta,
    CollectionNotFound,
    Hit,
    PointId,
    PointRecord,
    QuantizedSearch,
    StoreError,
    StoreRefused,
    normalize_id,
)

META_KEY = "polyclip"
T = TypeVar("T")


class ServerStore:
    """Collections on a Qdrant server (or qdrant-client's local engine for ``:memory:``)."""

    kind = "server"

    def __init__(
        self, url: str | None = None, api_key: str | None = None, path: Path | None = None
    ) -> None:
        local = url == ":memory:" or path is not None
        try:
            if path is not None:
                self.client = QdrantClient(path=str(path))
            elif url == ":memory:":
                self.client = QdrantClient(location=":memory:")
            else:
                self.client = QdrantClient(url=url, api_key=api_key, timeout=30)
        except Exception as e:
            raise StoreError(f"cannot open Qdrant at {url or path}: {e}") from e
        # The local engine is plain Python and not thread-safe; a server handles concurrency.
        self._lock: Any = threading.Lock() if local else contextlib.nullcontext()
        self.url = url or str(path)
        self.quarantined: dict[str, str] = {}  # a Qdrant server opens its own collections

    def _do(self, what: str, fn: Callable[[], T], name: str | None = None) -> T:
        try:
            with self._lock:
                return fn()
        except StoreError:
            raise
        except Exception as e:  # connection refused, timeouts, server-side errors
            if name is not None and _missing(e):
                raise CollectionNotFound(f"no collection named {name!r}") from e
            if _refused(e):
                raise StoreRefused(f"Qdrant refused to {what}: {e}") from e
            raise StoreError(f"Qdrant at {self.url} failed to {what}: {e}") from e

    def ping(self) -> None:
        self._do("list collections", self.client.get_collections)

    def create(self, meta: CollectionMeta) -> None:
        def run() -> None:
            if self.client.collection_exists(meta.name):
                raise CollectionExists(f"collection {meta.name!r} already exists")
            quantized = _client_quantization(meta.quantization)
            vectors = {
                s.vector: qm.VectorParams(
                    size=s.dimension,
                    distance=qm.Distance.COSINE,
                    on_disk=True if quantized is not None else None,
                )
                for s in meta.spaces
            }
            self.client.create_collection(
                meta.name,
                vectors_config=vectors,
                quantization_config=quantized,
                metadata={META_KEY: meta.to_json()},
            )

        self._do("create a collection", run)

    def get(self, name: str) -> CollectionMeta:
        def run() -> CollectionMeta:
            data = (self.client.get_collection(name).config.metadata or {}).get(META_KEY)
            if data is None:
                raise CollectionNotFound(
                    f"collection {name!r} exists in Qdrant but was not created by polyclip"
                )
            return CollectionMeta.from_json(data)

        return self._do("read a collection", run, name)

    def names(self) -> list[str]:
        found = self._do("list collections", self.client.get_collections)
        return sorted(c.name for c in found.collections)

    def count(self, name: str) -> int:
        return self._do("count points", lambda: self.client.count(name, exact=True).count, name)

    def indexed(self, name: str) -> int:
        info = self._do("read a collection", lambda: self.client.get_collection(name), name)
        return info.indexed_vectors_count or 0

    def drop(self, name: str) -> None:
        if not self._do("delete a collection", lambda: self.client.delete_collection(name)):
            raise CollectionNotFound(f"no collection named {name!r}")

    def upsert(self, name: str, points: list[PointRecord]) -> None:
        structs = [qm.PointStruct(id=p.id, vector=p.vectors, payload=p.payload) for p in points]
        self._do("upsert points", lambda: self.client.upsert(name, structs, wait=True), name)

    def delete_points(self, name: str, ids: list[PointId] | None, flt: FilterSpec | None) -> int:
        def run() -> int:
            if ids is not None:
                found = len(self.client.retrieve(name, list(ids), with_payload=False))
                selector: Any = qm.PointIdsList(points=list(ids))
            else:
                assert flt is not None
                client_filter = to_client(flt)
                found = self.client.count(name, count_filter=client_filter, exact=True).count
                selector = qm.FilterSelector(filter=client_filter)
            self.client.delete(name, points_selector=selector, wait=True)
            return found

        return self._do("delete points", run, name)

    def search(
        self,
        name: str,
        vector: str,
        query: list[float],
        limit: int,
        flt: FilterSpec | None,
        quantized: QuantizedSearch | None = None,
    ) -> list[Hit]:
        params = None if quantized is None else quantized.search_params(qm)
        result = self._do(
            "search",
            lambda: self.client.query_points(
                name,
                query=query,
                using=vector,
                limit=limit,
                query_filter=to_client(flt) if flt is not None else None,
                search_params=params,
                with_payload=True,
            ),
            name,
        )
        return [
            Hit(normalize_id(p.id), float(p.score), dict(p.payload or {})) for p in result.points
        ]

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a dead connection is not an error
            self.client.close()


def _client_quantization(kind: str) -> Any:
    """The server's quantisation config (qdrant-client's local engine accepts and ignores it)."""
    if kind == "int8":
        config = qm.ScalarQuantizationConfig(
            type=qm.ScalarType.INT8, quantile=0.99, always_ram=True
        )
        return qm.ScalarQuantization(scalar=config)
    if kind == "binary":
        return qm.BinaryQuantization(binary=qm.BinaryQuantizationConfig(always_ram=True))
    return None


def _missing(e: Exception) -> bool:
    """Qdrant's "no such collection": a 404 from a server, a ValueError from the local engine."""
    if isinstance(e, UnexpectedResponse):
        return e.status_code == 404
    return isinstance(e, ValueError) and "not found" in str(e)


def _refused(e: Exception) -> bool:
    """Input Qdrant would not take: a 400 or 422 from a server, a bad argument locally."""
    if isinstance(e, UnexpectedResponse):
        return e.status_code in (400, 422)
    return isinstance(e, ValueError | TypeError | OverflowError)
