"""The embedded store: one Qdrant Edge shard per collection, in-process, persisted on disk.

Layout: ``data_dir/<collection>/shard/`` (the shard, with its write-ahead log) and
``data_dir/<collection>/collection.json`` (the spaces it is indexed in). The JSON is written
after the shard and removed before it, so a crash half-way leaves a directory that is ignored
and cleaned up on the next create, never a collection without its metadata.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import qdrant_edge as qe

from polyclip.service.filters import FilterSpec, to_edge
from polyclip.service.store import (
    COLLECTION_NAME,
    CollectionExists,
    CollectionMeta,
    CollectionNotFound,
    Hit,
    PointId,
    PointRecord,
    StoreError,
    normalize_id,
)

log = logging.getLogger(__name__)
META_FILE = "collection.json"
T = TypeVar("T")


class EdgeStore:
    """Collections as Qdrant Edge shards under ``data_dir``; one process owns the directory."""

    kind = "edge"

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the store directory {self.data_dir}: {e}") from e
        self._lock = threading.RLock()  # guards the two dicts; shard calls run outside it
        self._shards: dict[str, qe.EdgeShard] = {}
        self._meta: dict[str, CollectionMeta] = {}
        for meta_file in sorted(self.data_dir.glob(f"*/{META_FILE}")):
            self._open(meta_file.parent)

    def _open(self, cdir: Path) -> None:
        try:
            meta = CollectionMeta.from_json(
                json.loads((cdir / META_FILE).read_text(encoding="utf-8"))
            )
            shard = qe.EdgeShard.load(str(cdir / "shard"))
        except Exception as e:  # a locked WAL (second process), corrupt files, bad JSON
            raise StoreError(
                f"cannot open collection {cdir.name} in {self.data_dir}: {e}. The embedded "
                "store belongs to one process; run one server per data_dir (or use QDRANT_URL)"
            ) from e
        self._shards[meta.name] = shard
        self._meta[meta.name] = meta

    def ping(self) -> None:
        if not self.data_dir.is_dir():
            raise StoreError(f"store directory {self.data_dir} is gone")

    def create(self, meta: CollectionMeta) -> None:
        cdir = self._dir(meta.name)
        with self._lock:
            if meta.name in self._meta:
                raise CollectionExists(f"collection {meta.name!r} already exists")
            if cdir.exists():  # leftovers of a crash half-way through create or drop
                shutil.rmtree(cdir)
            vectors = {
                s.vector: qe.EdgeVectorParams(size=s.dimension, distance=qe.Distance.Cosine)
                for s in meta.spaces
            }
            try:
                shard = qe.EdgeShard.create(str(cdir / "shard"), qe.EdgeConfig(vectors=vectors))
                tmp = cdir / (META_FILE + ".tmp")
                tmp.write_text(json.dumps(meta.to_json(), indent=2), encoding="utf-8")
                tmp.replace(cdir / META_FILE)
            except Exception as e:
                shutil.rmtree(cdir, ignore_errors=True)
                raise StoreError(f"cannot create collection {meta.name!r}: {e}") from e
            self._shards[meta.name] = shard
            self._meta[meta.name] = meta

    def get(self, name: str) -> CollectionMeta:
        with self._lock:
            meta = self._meta.get(name)
        if meta is None:
            raise CollectionNotFound(f"no collection named {name!r}")
        return meta

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._meta)

    def count(self, name: str) -> int:
        return self._call(name, lambda s: s.count(qe.CountRequest(exact=True)))

    def drop(self, name: str) -> None:
        with self._lock:
            shard = self._shards.pop(name, None)
            self._meta.pop(name, None)
        if shard is None:
            raise CollectionNotFound(f"no collection named {name!r}")
        cdir = self._dir(name)
        (cdir / META_FILE).unlink(missing_ok=True)
        shard.close()
        shutil.rmtree(cdir, ignore_errors=True)

    def upsert(self, name: str, points: list[PointRecord]) -> None:
        op = qe.UpdateOperation.upsert_points(
            [qe.Point(p.id, p.vectors, p.payload) for p in points]  # type: ignore[arg-type]
        )
        self._call(name, lambda s: s.update(op))

    def delete_points(self, name: str, ids: list[PointId] | None, flt: FilterSpec | None) -> int:
        def run(shard: qe.EdgeShard) -> int:
            if ids is not None:
                found = len(shard.retrieve(list(ids), False, False))
                shard.update(qe.UpdateOperation.delete_points(list(ids)))
                return found
            assert flt is not None
            edge_filter = to_edge(flt)
            found = shard.count(qe.CountRequest(exact=True, filter=edge_filter))
            shard.update(qe.UpdateOperation.delete_points_by_filter(edge_filter))
            return found

        return self._call(name, run)

    def search(
        self, name: str, vector: str, query: list[float], limit: int, flt: FilterSpec | None
    ) -> list[Hit]:
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(query, using=vector),
            filter=to_edge(flt) if flt is not None else None,
            with_payload=True,
        )
        scored = self._call(name, lambda s: s.query(request))
        return [Hit(normalize_id(p.id), float(p.score), dict(p.payload or {})) for p in scored]

    def close(self) -> None:
        """Flush and close every shard (graceful shutdown); the WAL covers a hard stop."""
        with self._lock:
            shards = list(self._shards.items())
            self._shards.clear()
            self._meta.clear()
        for name, shard in shards:
            try:
                shard.flush()
                shard.close()
            except Exception as e:  # keep closing the others
                log.error("closing collection %s failed: %s", name, e)

    # ---- helpers ---------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        if not re.match(COLLECTION_NAME, name):  # the API validates too: never leave data_dir
            raise StoreError(f"invalid collection name {name!r}")
        return self.data_dir / name

    def _call(self, name: str, fn: Callable[[qe.EdgeShard], T]) -> T:
        with self._lock:
            shard = self._shards.get(name)
        if shard is None:
            raise CollectionNotFound(f"no collection named {name!r}")
        try:
            return fn(shard)
        except Exception as e:
            with self._lock:
                dropped = name not in self._shards
            if dropped:  # deleted while this call ran
                raise CollectionNotFound(f"no collection named {name!r}") from e
            raise StoreError(f"collection {name!r}: {e}") from e
