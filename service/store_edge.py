"""The embedded store: one Qdrant Edge shard per collection, in-process, persisted on disk.

Layout: ``data_dir/<collection>/shard/`` (the shard, with its write-ahead log),
``data_dir/<collection>/collection.json`` (the spaces it is indexed in) and a ``.polyclip``
marker written first. The JSON is written after the shard, so a crash half-way leaves a marked
directory without metadata, which the next create of that name cleans up; a directory without
the marker is never deleted. A drop moves the directory aside (``.trash-*``) under the lock
before deleting it, so a collection re-created under the same name keeps its files.

Durability: every write goes to the shard's write-ahead log, an mmap'd file, before it is
acknowledged, so a killed process (``kill -9``, OOM) loses nothing; the log reaches the disk
itself (msync, then the segments) when the shard is flushed. ``flush_interval_s`` sets when: a
background thread flushes the collections written since the last flush every that many seconds
(default 1: an OS crash or power loss can lose up to about a second of acknowledged writes), and
0 flushes inside every write before it is acknowledged (nothing acknowledged is lost, at the
cost of a synchronous flush per request; a flush that fails then answers 503 for a write that
was applied, which a retry repeats harmlessly). :attr:`EdgeStore.unflushed` names what is at risk.

Indexing: Qdrant Edge runs no optimizer by itself, so the same background thread runs the
shard's optimizers on a collection once it has been written and then left alone for
``OPTIMIZE_IDLE_S``, and at least every ``OPTIMIZE_BUSY_S`` while writes keep coming: segments
are merged, vacuumed, HNSW-indexed and quantised (a collection created with ``int8`` or
``binary`` keeps its float vectors on disk and the quantised ones in RAM). Until then new points
are searched exactly. Without the second rule a collection under constant writes was never
optimised, and every overwritten or deleted point stayed in its segments: memory and disk that
grew with each write. A drop of a collection being optimised waits for it.

An optimisation holds the whole process: qdrant-edge-py (0.9.0) keeps Python's GIL while it
builds an index, so no request is served meanwhile (80 s for 100,000 new 768-d vectors on two
cores). So the busy rule waits at least ``OPTIMIZE_BUSY_FACTOR`` times the collection's last
optimisation (a bulk load then pays about one build instead of one a minute, each over a larger
index), a slow one is logged, and collections of that size belong on a Qdrant server
(``QDRANT_URL``), which indexes in threads of its own.

A collection that fails to open at start (a corrupt file, a WAL another process holds) is
quarantined: reported by :attr:`EdgeStore.quarantined` (and so on ``/ready`` and in a metric)
while every other collection serves. Engine errors become :class:`StoreRefused` where the
input was refused and :class:`StoreError` otherwise; Rust panics included.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import qdrant_edge as qe

from polyclip.service.filters import FilterSpec, to_edge
from polyclip.service.store import (
    COLLECTION_NAME,
    CollectionExists,
    CollectionMeta,
    CollectionNotFound,
    CollectionQuarantined,
    Hit,
    PointId,
    PointRecord,
    QuantizedSearch,
    StoreError,
    StoreRefused,
    normalize_id,
)

log = logging.getLogger(__name__)
META_FILE = "collection.json"
LOCK_FILE = ".lock"
MARKER = ".polyclip"  # written first into every collection directory this store creates
OPTIMIZE_IDLE_S = 5.0  # a collection written to is optimised once it has been idle this long
OPTIMIZE_BUSY_S = 60.0  # ... and at least this often after its first write while never idle
OPTIMIZE_BUSY_FACTOR = 20.0  # ... but no sooner than this many times its last optimisation took
OPTIMIZE_SLOW_S = 5.0  # an optimisation longer than this is logged: the process served nothing
CLOSE_WAIT_S = 10.0  # close() waits this long for an optimisation in progress
T = TypeVar("T")
_REFUSED = (ValueError, TypeError, OverflowError)  # the engine's "bad argument" errors


def _engine_error(name: str, e: BaseException) -> StoreError:
    """What an engine failure means for the caller (panics are BaseExceptions in PyO3)."""
    if isinstance(e, _REFUSED):
        return StoreRefused(f"collection {name!r}: {e}")
    return StoreError(f"collection {name!r}: {type(e).__name__}: {e}")


def _edge_quantization(kind: str) -> Any:
    """Qdrant's quantisation config for a collection's vectors; the quantised ones stay in RAM."""
    if kind == "int8":
        return qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, always_ram=True)
    if kind == "binary":
        return qe.BinaryQuantizationConfig(always_ram=True)
    return None


def _is_panic(e: BaseException) -> bool:
    return type(e).__name__ == "PanicException"


def _hold(data_dir: Path) -> IO[str]:
    """An exclusive lock on ``data_dir/.lock`` for as long as the store is open."""
    f = open(data_dir / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 (held until close)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise StoreError(
            f"the store directory {data_dir} is in use by another process (pid {pid}): the "
            "embedded store belongs to one process; stop that server first (or use QDRANT_URL)"
        ) from e
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


class EdgeStore:
    """Collections as Qdrant Edge shards under ``data_dir``; one process owns the directory."""

    kind = "edge"

    def __init__(
        self,
        data_dir: str | Path,
        flush_interval_s: float = 1.0,
        indexing_threshold_kb: int | None = None,
    ) -> None:
        """``indexing_threshold_kb``: vectors per segment (in KB) below which it is searched
        exactly rather than indexed and quantised; None keeps Qdrant's default (10,000 KB,
        about 3,300 768-d vectors)."""
        if flush_interval_s < 0:
            raise StoreError(f"flush_interval_s must be >= 0, got {flush_interval_s}")
        self.data_dir = Path(data_dir)
        self.flush_interval_s = flush_interval_s
        self.indexing_threshold_kb = indexing_threshold_kb
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the store directory {self.data_dir}: {e}") from e
        self._held = _hold(self.data_dir)  # one process per directory, said plainly
        self._lock = threading.RLock()  # guards the dicts and the directories of collections
        self._shards: dict[str, qe.EdgeShard] = {}
        self._meta: dict[str, CollectionMeta] = {}
        self.quarantined: dict[str, str] = {}
        self.unflushed: set[str] = set()  # written since their last flush (under _lock)
        # not optimised since: (first write, last write), monotonic seconds
        self._written: dict[str, tuple[float, float]] = {}
        self._busy_after: dict[str, float] = {}  # seconds of writes before a busy optimisation
        self._optimizing: set[str] = set()  # being optimised now (under _lock)
        self._idle = threading.Condition(self._lock)  # notified when an optimisation ends
        self._stop = threading.Event()
        for trash in self.data_dir.glob(".trash-*"):  # drops a crash interrupted
            shutil.rmtree(trash, ignore_errors=True)
        for meta_file in sorted(self.data_dir.glob(f"*/{META_FILE}")):
            self._open(meta_file.parent)
        self._worker = threading.Thread(
            target=self._maintain, name="polyclip-store-maintenance", daemon=True
        )
        self._worker.start()

    def _open(self, cdir: Path) -> None:
        """Open one collection, or quarantine it with the reason; never stop the others."""
        try:
            meta = CollectionMeta.from_json(
                json.loads((cdir / META_FILE).read_text(encoding="utf-8"))
            )
            shard = qe.EdgeShard.load(str(cdir / "shard"))
        except BaseException as e:  # corrupt files, bad JSON, a locked WAL, a panic on replay
            if isinstance(e, KeyboardInterrupt | SystemExit):
                raise
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            why = "its files cannot be opened (corrupt or unreadable; the server log has why)"
            if "WouldBlock" in detail:
                why = (
                    "its write-ahead log is locked by another process: the embedded store "
                    "belongs to one server per data_dir (or use QDRANT_URL)"
                )
            log.error("collection %s in %s is quarantined: %s", cdir.name, self.data_dir, detail)
            self.quarantined[cdir.name] = why  # shown on /ready: no paths
            return
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
            if meta.name in self.quarantined:
                raise CollectionQuarantined(
                    f"collection {meta.name!r} is quarantined; drop it before re-creating it"
                )
            if cdir.exists():
                if not (cdir / MARKER).exists() or (cdir / META_FILE).exists():
                    raise StoreError(
                        f"{cdir.name} exists in the store directory and is not a collection "
                        "this store left half-created; it is not touched"
                    )
                shutil.rmtree(cdir)  # leftovers of a crash half-way through a create
            quantized = _edge_quantization(meta.quantization)
            vectors = {
                s.vector: qe.EdgeVectorParams(
                    size=s.dimension,
                    distance=qe.Distance.Cosine,
                    on_disk=True if quantized is not None else None,  # originals, for rescoring
                    quantization_config=quantized,
                )
                for s in meta.spaces
            }
            optimizers = None
            if self.indexing_threshold_kb is not None:
                optimizers = qe.EdgeOptimizersConfig(indexing_threshold=self.indexing_threshold_kb)
            try:
                cdir.mkdir()
                (cdir / MARKER).write_text("polyclip collection\n", encoding="utf-8")
                config = qe.EdgeConfig(vectors=vectors, optimizers=optimizers)
                shard = qe.EdgeShard.create(str(cdir / "shard"), config)
                tmp = cdir / (META_FILE + ".tmp")
                tmp.write_text(json.dumps(meta.to_json(), indent=2), encoding="utf-8")
                tmp.replace(cdir / META_FILE)
            except BaseException as e:
                if isinstance(e, KeyboardInterrupt | SystemExit):
                    raise
                shutil.rmtree(cdir, ignore_errors=True)
                raise StoreError(f"cannot create collection {meta.name!r}: {e}") from e
            self._shards[meta.name] = shard
            self._meta[meta.name] = meta

    def get(self, name: str) -> CollectionMeta:
        with self._lock:
            meta = self._meta.get(name)
            why = self.quarantined.get(name)
        if why is not None:
            raise CollectionQuarantined(f"collection {name!r} could not be opened at start: {why}")
        if meta is None:
            raise CollectionNotFound(f"no collection named {name!r}")
        return meta

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._meta)

    def count(self, name: str) -> int:
        return self._call(name, lambda s: s.count(qe.CountRequest(exact=True)))

    def indexed(self, name: str) -> int:
        return int(self._call(name, lambda s: s.info().indexed_vectors_count))

    def drop(self, name: str) -> None:
        """Close, move aside and delete; a quarantined collection can be dropped too."""
        cdir = self._dir(name)
        with self._lock:
            self._idle.wait_for(lambda: name not in self._optimizing)  # never under its feet
            self._written.pop(name, None)
            self._busy_after.pop(name, None)
            shard = self._shards.pop(name, None)
            self._meta.pop(name, None)
            quarantined = self.quarantined.pop(name, None)
            if shard is None and quarantined is None:
                raise CollectionNotFound(f"no collection named {name!r}")
            if shard is not None:
                with contextlib.suppress(Exception):
                    shard.close()
            trash = self.data_dir / f".trash-{name}-{uuid.uuid4().hex}"
            cdir.rename(trash)  # inside the lock: a create of this name now finds no files
        shutil.rmtree(trash, ignore_errors=True)

    def upsert(self, name: str, points: list[PointRecord]) -> None:
        op = qe.UpdateOperation.upsert_points(
            [qe.Point(p.id, p.vectors, p.payload) for p in points]  # type: ignore[arg-type]
        )
        self._write(name, lambda s: s.update(op))

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

        return self._write(name, run)

    def search(
        self,
        name: str,
        vector: str,
        query: list[float],
        limit: int,
        flt: FilterSpec | None,
        quantized: QuantizedSearch | None = None,
    ) -> list[Hit]:
        params = None if quantized is None else quantized.search_params(qe)

        def run(shard: qe.EdgeShard) -> list[Any]:
            request = qe.QueryRequest(
                limit=limit,
                query=qe.Query.Nearest(query, using=vector),
                filter=to_edge(flt) if flt is not None else None,
                with_payload=True,
                params=params,
            )
            return shard.query(request)

        scored = self._call(name, run)
        return [Hit(normalize_id(p.id), float(p.score), dict(p.payload or {})) for p in scored]

    def flush(self) -> None:
        """Flush every collection written since its last flush (the WAL and segments to disk)."""
        with self._lock:
            names, self.unflushed = self.unflushed, set()
        for name in sorted(names):
            try:
                self._call(name, lambda s: s.flush())
            except CollectionNotFound:
                pass  # dropped meanwhile
            except StoreError as e:
                with self._lock:
                    self.unflushed.add(name)  # try again next time
                log.error("flushing collection %s failed: %s", name, e)

    def optimize(self, name: str) -> bool:
        """Run the collection's optimizers now (merge, index, quantise); True if any ran.
        A write during it marks the collection for the next round; a failure marks it again."""
        with self._lock:
            self._idle.wait_for(lambda: name not in self._optimizing)
            self._optimizing.add(name)
            written = self._written.pop(name, None)
        start = time.monotonic()
        try:
            ran = bool(self._call(name, lambda s: s.optimize()))
            took = time.monotonic() - start
            with self._lock:
                self._busy_after[name] = max(OPTIMIZE_BUSY_S, OPTIMIZE_BUSY_FACTOR * took)
            if took > OPTIMIZE_SLOW_S:
                log.warning(
                    "optimising collection %s took %.0f s, during which this process served "
                    "nothing (the embedded store holds the GIL while it indexes); collections "
                    "this large belong on a Qdrant server (QDRANT_URL)", name, took,
                )  # fmt: skip
            return ran
        except StoreError:
            with self._lock:
                if written is not None:
                    self._written.setdefault(name, written)
            raise
        finally:
            with self._lock:
                self._optimizing.discard(name)
                self._idle.notify_all()

    def close(self) -> None:
        """Flush and close every shard (graceful shutdown); the WAL covers a hard stop. An
        optimisation still running after ``CLOSE_WAIT_S`` is left to the process's end: its
        collection is neither flushed nor closed here (its write-ahead log holds every write)."""
        self._stop.set()
        self._worker.join(timeout=CLOSE_WAIT_S)
        with self._lock:
            busy = set(self._optimizing)
            shards = [(n, s) for n, s in self._shards.items() if n not in busy]
            self._shards.clear()
            self._meta.clear()
        for name in sorted(busy):
            log.warning("collection %s is being optimised: closing without flushing it", name)
        for name, shard in shards:
            try:
                shard.flush()
                shard.close()
            except Exception as e:  # keep closing the others
                log.error("closing collection %s failed: %s", name, e)
        self._held.close()  # releases the directory

    # ---- helpers ---------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        if not re.match(COLLECTION_NAME, name):  # the API validates too: never leave data_dir
            raise StoreError(f"invalid collection name {name!r}")
        return self.data_dir / name

    def _maintain(self) -> None:
        """Flush every ``flush_interval_s`` (when > 0); optimise collections left idle, or
        written without pause for ``OPTIMIZE_BUSY_S`` (longer after a slow optimisation)."""
        period = max(0.05, min(self.flush_interval_s or OPTIMIZE_IDLE_S, OPTIMIZE_IDLE_S,
                               OPTIMIZE_BUSY_S))  # fmt: skip
        flushed = time.monotonic()
        while not self._stop.wait(period):
            now = time.monotonic()
            if self.flush_interval_s and now - flushed >= self.flush_interval_s:
                self.flush()
                flushed = now
            with self._lock:
                due = [
                    n
                    for n, (first, last) in self._written.items()
                    if now - last >= OPTIMIZE_IDLE_S
                    or now - first >= self._busy_after.get(n, OPTIMIZE_BUSY_S)
                ]
            for name in due:
                if self._stop.is_set():
                    return
                try:
                    self.optimize(name)
                except CollectionNotFound:
                    pass
                except StoreError as e:
                    log.error("optimising collection %s failed: %s", name, e)

    def _write(self, name: str, fn: Callable[[qe.EdgeShard], T]) -> T:
        """``fn`` changes the shard: flush it now (``flush_interval_s`` 0) or mark it for the
        flusher, before the caller acknowledges the write."""

        def run(shard: qe.EdgeShard) -> T:
            out = fn(shard)
            if self.flush_interval_s == 0:
                shard.flush()
            with self._lock:
                if self.flush_interval_s:
                    self.unflushed.add(name)
                now = time.monotonic()
                first = self._written.get(name, (now, now))[0]
                self._written[name] = (first, now)
            return out

        return self._call(name, run)

    def _call(self, name: str, fn: Callable[[qe.EdgeShard], T]) -> T:
        with self._lock:
            shard = self._shards.get(name)
            why = self.quarantined.get(name)
        if why is not None:
            raise CollectionQuarantined(f"collection {name!r} could not be opened at start: {why}")
        if shard is None:
            raise CollectionNotFound(f"no collection named {name!r}")
        try:
            return fn(shard)
        except BaseException as e:  # PyO3 panics derive from BaseException, not Exception
            if not isinstance(e, Exception) and not _is_panic(e):
                raise
            with self._lock:
                dropped = name not in self._shards
            if dropped:  # deleted while this call ran
                raise CollectionNotFound(f"no collection named {name!r}") from e
            raise _engine_error(name, e) from e
