"""``polyclip index``: embed a corpus in-process and upsert it, the way the API would.

The same core as ``polyclip serve`` does the work (models, the space rule, the point layout:
one named vector per space, the payload, ids), so a collection indexed here is one the server
serves, and the other way round. The target is the embedded store in ``--data-dir`` (refused
while a server holds it) or a Qdrant server (``--qdrant-url``), where N workers on N machines
each take ``--shard i/N`` of one corpus: an item belongs to shard ``sha256(id) mod N``.

Ids come from ``--id-field``, else a UUIDv5 of the collection and the text, so indexing the same
corpus twice leaves one point per item. Progress is recorded after every upserted batch in a
state file; a rerun skips what is recorded (and repeats at most one batch, harmlessly).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from polyclip.encoders.errors import PolyclipError
from polyclip.service.collections import PointInput
from polyclip.service.config import ModelConfig, Settings, load_settings
from polyclip.service.core import Service
from polyclip.service.domain import ServiceError
from polyclip.service.metrics import Metrics
from polyclip.service.store import StoreError

NAMESPACE = uuid.UUID("6b1f2c1e-6f4d-5d3a-9a0c-706f6c79636c")  # polyclip's UUIDv5 namespace
FORMATS = (".txt", ".jsonl", ".csv", ".parquet")


class IndexingError(PolyclipError):
    """A corpus, a shard or a target that cannot be indexed; the message says why."""


@dataclass(frozen=True)
class IndexJob:
    model: str  # an alias or model name of --config, or a model directory
    collection: str
    input: Path
    text_field: str = "text"
    id_field: str | None = None
    payload_fields: list[str] = field(default_factory=list)
    shard: tuple[int, int] = (0, 1)
    batch: int = 256
    config: Path | None = None
    data_dir: Path | None = None
    qdrant_url: str | None = None
    device: str = "cpu"
    state_dir: Path = Path("artifacts/index-state")
    quantization: str = "none"  # when the collection is created here


def point_id(collection: str, text: str, given: Any = None) -> int | str:
    """The item's id: the id field (an unsigned int or a UUID) or a UUIDv5 of collection+text."""
    if given is None or given == "":
        return str(uuid.uuid5(NAMESPACE, f"{collection}\0{text}"))
    if isinstance(given, int) or (isinstance(given, str) and given.isdigit()):
        return int(given)
    try:
        return str(uuid.UUID(str(given)))
    except ValueError as e:
        raise IndexingError(f"id {given!r} is neither an unsigned integer nor a UUID") from e


def shard_of(pid: int | str, shards: int) -> int:
    return int.from_bytes(hashlib.sha256(str(pid).encode()).digest()[:8], "big") % shards


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a corpus: txt (a text per line), JSONL, CSV (header row) or Parquet."""
    suffix = Path(path.name.removesuffix(".gz")).suffix.lower()
    if suffix not in FORMATS:
        raise IndexingError(f"{path}: use {', '.join(FORMATS)} (txt, JSONL and CSV may be .gz)")
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise IndexingError("reading Parquet needs pyarrow: pip install pyarrow") from e
        for batch in pq.ParquetFile(path).iter_batches():
            yield from batch.to_pylist()
        return
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        if suffix == ".txt":
            for line in f:
                if line.strip():
                    yield {"text": line.strip()}
        elif suffix == ".csv":
            yield from csv.DictReader(f)
        else:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as e:
                        raise IndexingError(f"{path}:{n}: not valid JSON ({e.msg})") from e


def items_of(job: IndexJob) -> Iterator[PointInput]:
    """This shard's items, in file order."""
    index, shards = job.shard
    for n, record in enumerate(read_records(job.input), 1):
        text = record.get(job.text_field)
        if not isinstance(text, str) or not text.strip():
            raise IndexingError(f"{job.input} record {n}: no text in field {job.text_field!r}")
        pid = point_id(job.collection, text, record.get(job.id_field) if job.id_field else None)
        if shard_of(pid, shards) != index:
            continue
        payload = {k: record[k] for k in job.payload_fields if k in record}
        yield PointInput(pid, text, None, {"text": text, **payload})


def settings_for(job: IndexJob) -> Settings:
    """The server's settings (``--config``) with the job's store, or a one-model setting."""
    values: dict[str, Any] = {}
    if job.data_dir is not None:
        values["data_dir"] = job.data_dir
    if job.qdrant_url is not None:
        values["qdrant_url"] = job.qdrant_url
    if job.config is not None:
        base = load_settings(job.config)
        models = {n: m.model_copy(update={"device": job.device}) for n, m in base.models.items()}
        return base.model_copy(update={**values, "models": models, "demo": None})
    model = ModelConfig(path=job.model, device=job.device)
    return Settings(models={"index": model}, aliases={}, **values)  # type: ignore[call-arg]


async def run_index(job: IndexJob) -> dict[str, Any]:
    """Index ``job``'s shard; returns counts (seen, upserted, skipped as already done)."""
    index, shards = job.shard
    if not 0 <= index < shards:
        raise IndexingError(f"--shard {index}/{shards}: the index must be in 0..{shards - 1}")
    settings = settings_for(job)
    model = job.model if job.config is not None else "index"
    state = job.state_dir / f"{job.collection}-{index}-of-{shards}.json"
    done = json.loads(state.read_text())["done"] if state.is_file() else 0
    try:
        svc = await Service.start(settings, Metrics(), None)
    except StoreError as e:  # the embedded store's directory held by a running server
        raise IndexingError(str(e)) from e
    try:
        if job.collection not in await svc.collections.names():
            await svc.collections.create(job.collection, [model], job.quantization)
        seen = upserted = 0
        batch: list[PointInput] = []
        state.parent.mkdir(parents=True, exist_ok=True)
        with tqdm(desc=f"index {job.collection} shard {index}/{shards}", unit="item") as bar:
            for item in items_of(job):
                seen += 1
                if seen <= done:
                    bar.update(1)
                    continue
                batch.append(item)
                if len(batch) == job.batch:
                    upserted += await _flush(svc, job, batch, state, seen, bar)
            upserted += await _flush(svc, job, batch, state, seen, bar)
        count = (await svc.collections.describe(job.collection)).points_count
    except ServiceError as e:
        raise IndexingError(f"{e.code}: {e.message}") from e
    finally:
        await svc.stop()
    return {
        "collection": job.collection,
        "shard": f"{index}/{shards}",
        "items": seen,
        "upserted": upserted,
        "skipped_done": min(done, seen),
        "points_count": count,
    }


async def _flush(
    svc: Service, job: IndexJob, batch: list[PointInput], state: Path, seen: int, bar: tqdm
) -> int:
    """Upsert a batch (in chunks the limits allow), then record the progress."""
    if not batch:
        return 0
    step = svc.limits.max_items
    for start in range(0, len(batch), step):
        await svc.collections.upsert(job.collection, batch[start : start + step], None)
    n = len(batch)
    tmp = state.with_suffix(".tmp")
    tmp.write_text(json.dumps({"input": str(job.input), "done": seen}), encoding="utf-8")
    tmp.replace(state)
    bar.update(n)
    batch.clear()
    return n
