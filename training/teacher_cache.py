"""Teacher embeddings computed once per unique anchor and kept on disk, memory-mapped.

Every objective needs only the teacher's embedding of the English anchor (or image), never its
gradients, so the teacher runs once over the unique anchors and all later runs and objectives
read the rows back: on Multi30k that turns ~29k teacher passes per epoch into zero.

Layout of one cache (one teacher, one anchor kind, under ``root/<teacher>-<anchor>-<key>/``)::

    cache.json          teacher, space, dim
    00000.keys.jsonl    the anchors of shard 0, one JSON string per line (row i = line i)
    00000.json          rows planned and rows done
    00000.npy           float32 (rows, dim), written in chunks through np.lib.format.open_memmap

New anchors become a new shard. A shard's keys are written before its rows and ``done`` is
advanced only after each chunk is flushed, so an interrupted run resumes where it stopped. Under
``torchrun`` every rank fills its own share of the new anchors in its own shard files
(``00001-000``, ``00001-001``, ...), so the teacher pass is split across the GPUs instead of
rank 0 doing it while the others wait.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from polyclip.encoders.hub import resolve_model_dir
from polyclip.encoders.load import load_encoders
from polyclip.encoders.space import fingerprint, space_of
from polyclip.training.data import DataError

log = logging.getLogger(__name__)

Anchor = Literal["text", "image"]
EncodeFn = Callable[[list[str]], np.ndarray]
STATE = "cache.json"
FORMAT = 2  # 1 kept the shard list in cache.json; it is converted on open
KEY_VERSION = 1  # part of the directory key: bump only when cached rows would differ


def teacher_key(space: str, anchor: Anchor, prefix: str = "") -> str:
    """Identity of (teacher weights, anchor kind, prefix): a different teacher → another cache.

    The space id's fingerprint hashes the teacher's tensors, so a copy of the same teacher
    elsewhere shares the cache and any change of its weights starts a new one.
    """
    ident = fingerprint(space) or space
    key = [KEY_VERSION, anchor, prefix, ident]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


class TeacherCache:
    """A key → teacher-embedding store; ``encode`` runs only for keys not yet on disk."""

    def __init__(
        self,
        directory: Path,
        encode: EncodeFn,
        *,
        meta: dict[str, Any] | None = None,
        chunk_rows: int = 512,
    ) -> None:
        self.dir = Path(directory)
        self.encode = encode
        self.chunk_rows = chunk_rows
        self.dir.mkdir(parents=True, exist_ok=True)
        fresh = {"format": FORMAT, "dim": 0, **(meta or {})}
        self.state: dict[str, Any] = _read_state(self.dir) or fresh
        self._index: dict[str, int] = {}
        self._arrays: list[np.ndarray] = []
        self._offsets = np.zeros(1, dtype=np.int64)
        self.refresh()

    @classmethod
    def for_teacher(
        cls,
        root: str | Path,
        teacher: str | Path,
        *,
        anchor: Anchor = "text",
        prefix: str = "",
        device: str = "cpu",
        batch_size: int = 64,
    ) -> TeacherCache:
        """The cache of ``teacher`` under ``root``; the teacher loads only if rows are missing."""
        path = resolve_model_dir(teacher)
        space = space_of(path)
        label = re.sub(r"[^\w.-]+", "_", space.partition("@")[0])
        directory = Path(root) / f"{label}-{anchor}-{teacher_key(space, anchor, prefix)}"
        meta = {"teacher": str(path), "anchor": anchor, "prefix": prefix, "space": space}
        loaded: dict[str, Any] = {}

        def encode(keys: list[str]) -> np.ndarray:
            if "enc" not in loaded:
                text_enc, image_enc = load_encoders(path, device=device)
                enc = image_enc if anchor == "image" else text_enc
                if enc is None:
                    raise DataError(
                        f"anchor 'image' needs a dual-encoder teacher; {path} has no image tower"
                    )
                loaded["enc"] = enc
            if anchor == "image":
                return loaded["enc"].encode(keys, batch_size=batch_size, show_progress=False)
            return loaded["enc"].encode(
                keys, prefix=prefix or None, batch_size=batch_size, show_progress=False
            )

        cache = cls(directory, encode, meta=meta)
        cache.state["space"] = space  # caches written before space ids held a folder name
        return cache

    # ---- reading -----------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.state["dim"])

    @property
    def space(self) -> str:
        """The teacher's embedding space id (:mod:`polyclip.encoders.space`)."""
        return str(self.state.get("space", ""))

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        """Global row ids of ``keys``; a key never computed is an error, not a silent zero."""
        try:
            return np.fromiter((self._index[k] for k in keys), dtype=np.int64, count=len(keys))
        except KeyError as e:
            raise DataError(f"anchor not in the teacher cache {self.dir}: {e.args[0]!r}") from e

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The embeddings at global ``rows`` (a float32 copy, in the order given)."""
        shard = np.searchsorted(self._offsets, rows, side="right") - 1
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for s in np.unique(shard):
            sel = shard == s
            out[sel] = self._arrays[s][rows[sel] - self._offsets[s]]
        return out

    def get(self, keys: Sequence[str]) -> np.ndarray:
        return self.take(self.rows(keys))

    @property
    def shards(self) -> list[dict[str, Any]]:
        """Every shard's state (``name``, ``rows``, ``done``), in name order."""
        names = sorted(p.name.removesuffix(".keys.jsonl") for p in self.dir.glob("*.keys.jsonl"))
        return [{"name": n, **json.loads((self.dir / f"{n}.json").read_text())} for n in names]

    # ---- writing -----------------------------------------------------------------------
    def ensure(
        self, keys: Sequence[str], *, rank: int = 0, world: int = 1, desc: str = "teacher cache"
    ) -> int:
        """Compute and store every key not cached yet; returns how many new anchors it added.

        With ``world`` > 1 every rank calls this with the same keys on the same snapshot of the
        cache (opened on every rank, then a barrier) and fills only its own share; a barrier
        and :meth:`refresh` afterwards let every rank read all of them.
        """
        shards = self._snapshot  # as of the last refresh: the same on every rank
        pending = [s for s in shards if s["done"] < s["rows"]]  # an interrupted run's
        planned = {k for s in pending for k in _read_keys(self.dir / f"{s['name']}.keys.jsonl")}
        missing = [k for k in dict.fromkeys(keys) if k not in self._index and k not in planned]
        mine = [s for i, s in enumerate(pending) if i % world == rank]
        part = missing[rank * len(missing) // world : (rank + 1) * len(missing) // world]
        if part:
            name = f"{len(shards):05d}" + (f"-{rank:03d}" if world > 1 else "")
            shard = {"name": name, "rows": len(part), "done": 0}
            self._save_shard(shard)  # before the keys: a shard is the keys file, once written
            _write_keys(self.dir / f"{name}.keys.jsonl", part)
            mine.append(shard)
        for shard in mine:
            self._fill(shard, desc)
        self.refresh()
        return len(part)

    def _fill(self, shard: dict[str, Any], desc: str) -> None:
        keys = _read_keys(self.dir / f"{shard['name']}.keys.jsonl")
        npy = self.dir / f"{shard['name']}.npy"
        array: np.ndarray | None = None
        if shard["done"]:
            array = np.lib.format.open_memmap(npy, mode="r+")
        with tqdm(total=shard["rows"], initial=shard["done"], desc=desc, unit="row") as bar:
            while shard["done"] < shard["rows"]:
                start = shard["done"]
                chunk = keys[start : start + self.chunk_rows]
                emb = np.asarray(self.encode(chunk), dtype=np.float32)
                if array is None:
                    if not self.state["dim"]:
                        self.state["dim"] = emb.shape[1]
                        self._save_state()
                    array = np.lib.format.open_memmap(
                        npy, mode="w+", dtype=np.float32, shape=(shard["rows"], self.dim)
                    )
                if emb.shape != (len(chunk), self.dim):
                    raise DataError(
                        f"teacher returned {emb.shape}, expected {len(chunk)} rows of {self.dim}"
                    )
                array[start : start + len(chunk)] = emb
                array.flush()
                shard["done"] = start + len(chunk)
                self._save_shard(shard)
                bar.update(len(chunk))
        del array

    def _save_state(self) -> None:
        _write_json(self.dir / STATE, self.state)

    def _save_shard(self, shard: dict[str, Any]) -> None:
        _write_json(self.dir / f"{shard['name']}.json", {k: shard[k] for k in ("rows", "done")})

    def refresh(self) -> None:
        """Map every finished shard's keys to global rows; shards open read-only, memory-mapped.

        Other processes may have added shards (other ranks): the dimension is re-read too.
        """
        self.state["dim"] = self.state["dim"] or (_read_state(self.dir) or {}).get("dim", 0)
        self._snapshot = self.shards
        self._index, self._arrays, offsets = {}, [], [0]
        for shard in self._snapshot:
            if shard["done"] < shard["rows"]:
                continue
            base = offsets[-1]
            keys = _read_keys(self.dir / f"{shard['name']}.keys.jsonl")
            self._index.update((k, base + i) for i, k in enumerate(keys))
            self._arrays.append(np.load(self.dir / f"{shard['name']}.npy", mmap_mode="r"))
            offsets.append(base + len(keys))
        self._offsets = np.asarray(offsets, dtype=np.int64)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _read_state(directory: Path) -> dict[str, Any] | None:
    """``cache.json``; a format-1 cache (shard list inside it) is converted in place."""
    path = directory / STATE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is corrupt ({e.msg}); delete that cache directory") from e
    if state.get("format") == 1:
        for shard in state.pop("shards", []):
            _write_json(directory / f"{shard['name']}.json", shard)
        state["format"] = FORMAT
        _write_json(path, state)
    if state.get("format") != FORMAT:
        raise DataError(f"{path}: cache format {state.get('format')}, expected {FORMAT}")
    return state


def _write_keys(path: Path, keys: Sequence[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(k, ensure_ascii=False) + "\n" for k in keys), "utf-8")
    os.replace(tmp, path)


def _read_keys(path: Path) -> list[str]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
