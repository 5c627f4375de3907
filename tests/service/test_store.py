"""Both store backends, the same assertions: the embedded shard and qdrant-client's engine."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from polyclip.service import store_edge
from polyclip.service.filters import FilterSpec, with_lang
from polyclip.service.store import (
    CollectionExists,
    CollectionMeta,
    CollectionNotFound,
    PointRecord,
    QuantizedSearch,
    SpaceIndex,
    Store,
    StoreError,
    vector_name,
)
from polyclip.service.store_edge import EdgeStore
from polyclip.service.store_server import ServerStore

META = CollectionMeta(
    "c",
    (SpaceIndex("clip", "clip", 4, "teacher"), SpaceIndex("org/e5 small", "org_e5_small", 3, "e5")),
)
UID = str(uuid.UUID(int=7))


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = EdgeStore(tmp_path / "q") if request.param == "edge" else ServerStore(":memory:")
    yield s
    s.close()


def unit(*v: float) -> list[float]:
    a = np.asarray(v, dtype=np.float32)
    return (a / np.linalg.norm(a)).tolist()


def fill(store: Store) -> None:
    store.create(META)
    store.upsert(
        "c",
        [
            PointRecord(
                1, {"clip": unit(1, 0, 0, 0), "org_e5_small": unit(1, 0, 0)}, {"lang": "en", "n": 1}
            ),
            PointRecord(
                2, {"clip": unit(0, 1, 0, 0), "org_e5_small": unit(0, 1, 0)}, {"lang": "de", "n": 2}
            ),
            PointRecord(
                UID,
                {"clip": unit(1, 1, 0, 0), "org_e5_small": unit(0, 0, 1)},
                {"lang": "fr", "n": 3},
            ),
        ],
    )


def ids(hits: list) -> list:
    return [h.id for h in hits]


def test_vector_names_are_safe() -> None:
    assert vector_name("sentence-transformers/all-mpnet-base-v2") == (
        "sentence-transformers_all-mpnet-base-v2"
    )
    assert vector_name("///") == "default"


def test_collection_lifecycle(store: Store) -> None:
    fill(store)
    assert store.get("c") == META and store.names() == ["c"] and store.count("c") == 3
    with pytest.raises(CollectionExists):
        store.create(META)
    store.drop("c")
    assert store.names() == []
    for call in (lambda: store.get("c"), lambda: store.count("c"), lambda: store.drop("c")):
        with pytest.raises(CollectionNotFound):
            call()


def test_search_per_named_vector_and_ids(store: Store) -> None:
    fill(store)
    hits = store.search("c", "clip", unit(1, 0.1, 0, 0), 3, None)
    assert ids(hits) == [1, UID, 2] and hits[0].payload == {"lang": "en", "n": 1}
    assert hits[0].score == pytest.approx(0.995, abs=1e-3)
    assert ids(store.search("c", "org_e5_small", unit(0, 0, 1), 1, None)) == [UID]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"must": [{"key": "lang", "match": {"value": "de"}}]}, [2]),
        ({"must": [{"key": "lang", "match": {"any": ["de", "fr"]}}]}, [UID, 2]),
        ({"must": [{"key": "lang", "match": {"except": ["en"]}}]}, [UID, 2]),
        ({"must_not": [{"key": "lang", "match": {"value": "en"}}]}, [UID, 2]),
        ({"must": [{"key": "n", "range": {"gte": 2, "lt": 3}}]}, [2]),
        (
            {"should": [{"key": "n", "match": {"value": 1}}, {"key": "n", "match": {"value": 3}}]},
            [1, UID],
        ),
        ({"must": [{"must_not": [{"key": "lang", "match": {"value": "fr"}}]}]}, [1, 2]),
    ],
)
def test_filters_mean_the_same_on_both_backends(store: Store, flt: dict, expected: list) -> None:
    fill(store)
    hits = store.search("c", "clip", unit(1, 0.1, 0, 0), 10, FilterSpec.model_validate(flt))
    assert ids(hits) == expected


def test_lang_shortcut_combines_with_a_filter(store: Store) -> None:
    fill(store)
    flt = with_lang(FilterSpec.model_validate({"must": [{"key": "n", "range": {"gt": 1}}]}), "fr")
    assert ids(store.search("c", "clip", unit(1, 0, 0, 0), 10, flt)) == [UID]


def test_delete_points_by_ids_and_filter(store: Store) -> None:
    fill(store)
    assert store.delete_points("c", [1, 999], None) == 1
    flt = FilterSpec.model_validate({"must": [{"key": "lang", "match": {"value": "fr"}}]})
    assert store.delete_points("c", None, flt) == 1
    assert store.count("c") == 1
    assert ids(store.search("c", "clip", unit(1, 0, 0, 0), 10, None)) == [2]


def test_upsert_replaces_a_point(store: Store) -> None:
    fill(store)
    store.upsert(
        "c", [PointRecord(2, {"clip": unit(0, 0, 1, 0), "org_e5_small": unit(0, 1, 0)}, {"v": 2})]
    )
    assert store.count("c") == 3
    assert store.search("c", "clip", unit(0, 0, 1, 0), 1, None)[0].payload == {"v": 2}


def test_edge_store_persists_across_reopen(tmp_path: Path) -> None:
    first = EdgeStore(tmp_path / "q")
    fill(first)
    first.close()
    again = EdgeStore(tmp_path / "q")
    assert again.get("c") == META and again.count("c") == 3
    assert ids(again.search("c", "clip", unit(0, 1, 0, 0), 1, None)) == [2]
    again.close()


def test_edge_store_belongs_to_one_process(tmp_path: Path) -> None:
    """A second opener is refused with a message naming the holder, before any collection."""
    first = EdgeStore(tmp_path / "q")
    fill(first)
    with pytest.raises(StoreError, match=rf"in use by another process \(pid {os.getpid()}\)"):
        EdgeStore(tmp_path / "q")
    first.close()
    again = EdgeStore(tmp_path / "q")  # released on close
    assert again.count("c") == 3
    again.close()


def test_edge_store_cleans_only_its_own_half_created_collection(tmp_path: Path) -> None:
    (tmp_path / "q" / "c" / "shard").mkdir(parents=True)  # a crash before collection.json
    (tmp_path / "q" / "c" / ".polyclip").write_text("polyclip collection\n")
    store = EdgeStore(tmp_path / "q")
    assert store.names() == []
    fill(store)  # create cleans its leftovers
    assert store.count("c") == 3
    mine = tmp_path / "q" / "d"  # a directory this store did not make
    (mine / "shard").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(StoreError, match="is not touched"):
        store.create(CollectionMeta("d", META.spaces))
    assert (mine / "notes.txt").read_text() == "keep me"
    store.close()


def test_edge_store_refuses_path_like_names(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "q")
    with pytest.raises(StoreError, match="invalid collection name"):
        store.create(CollectionMeta("../evil", META.spaces))
    store.close()


def test_edge_store_flush_policy(tmp_path: Path) -> None:
    """0: every write is flushed before it returns; N > 0: written collections wait for the
    flusher (what an OS crash could lose is named by ``unflushed``) and close flushes them."""
    synced = EdgeStore(tmp_path / "a", flush_interval_s=0)
    fill(synced)
    assert synced.unflushed == set()
    synced.close()
    later = EdgeStore(tmp_path / "b", flush_interval_s=3600)
    fill(later)
    assert later.unflushed == {"c"}
    later.delete_points("c", [1], None)
    later.flush()
    assert later.unflushed == set()
    later.search("c", "clip", unit(1, 0, 0, 0), 1, None)  # reads mark nothing
    assert later.unflushed == set()
    later.close()
    background = EdgeStore(tmp_path / "c", flush_interval_s=0.05)
    fill(background)
    deadline = time.monotonic() + 10
    while background.unflushed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert background.unflushed == set()
    background.close()
    with pytest.raises(StoreError, match="flush_interval_s"):
        EdgeStore(tmp_path / "d", flush_interval_s=-1)


def random_points(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def quantized_collection(store: Store, kind: str, x: np.ndarray) -> None:
    store.create(CollectionMeta(kind, (SpaceIndex("s", "v", x.shape[1], "m"),), quantization=kind))
    store.upsert(kind, [PointRecord(i, {"v": row.tolist()}, {}) for i, row in enumerate(x)])


@pytest.mark.parametrize("kind", ["int8", "binary"])
def test_quantized_collections_are_indexed_and_rescored(tmp_path: Path, kind: str) -> None:
    """Qdrant's own quantisation on the embedded store: built when the collection is optimised;
    without rescoring the scores are the quantised similarity, with it exact cosines."""
    x = random_points(1200, 32)
    store = EdgeStore(tmp_path / "q", indexing_threshold_kb=1)
    quantized_collection(store, kind, x)
    assert store.indexed(kind) == 0  # searched exactly until optimised
    assert store.optimize(kind) and store.indexed(kind) == len(x)
    query = x[0].tolist()
    exact = store.search(kind, "v", query, 10, None, QuantizedSearch(ignore=True))
    cosine = {h.id: float(x[h.id] @ x[0]) for h in exact}
    assert exact[0].id == 0 and all(h.score == pytest.approx(cosine[h.id], abs=1e-5) for h in exact)
    raw = store.search(kind, "v", query, 10, None, QuantizedSearch(rescore=False))
    rescored = store.search(kind, "v", query, 10, None, QuantizedSearch(oversampling=4.0))
    assert all(h.score == pytest.approx(float(x[h.id] @ x[0]), abs=1e-5) for h in rescored)
    if kind == "binary":
        assert raw[0].score > 1.5  # agreeing bits of 32, not a cosine
    else:
        assert max(abs(h.score - float(x[h.id] @ x[0])) for h in raw) > 1e-4  # int8 scores
    store.close()
    again = EdgeStore(tmp_path / "q")
    assert again.get(kind).quantization == kind and again.indexed(kind) == len(x)
    again.close()


def test_written_collections_are_optimised_once_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_edge, "OPTIMIZE_IDLE_S", 0.0)
    store = EdgeStore(tmp_path / "q", flush_interval_s=0.05, indexing_threshold_kb=1)
    x = random_points(1200, 32)
    quantized_collection(store, "int8", x)
    deadline = time.monotonic() + 30
    while store.indexed("int8") < len(x) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.indexed("int8") == len(x)
    store.drop("int8")  # waits for any optimisation, then removes
    assert store.names() == []
    store.close()


def test_collections_under_constant_writes_are_optimised_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never idle (a write every 10 ms), yet optimised: else every overwritten version stays in
    the segments, and memory and disk grow with each write for as long as writes keep coming."""
    monkeypatch.setattr(store_edge, "OPTIMIZE_IDLE_S", 3600.0)
    monkeypatch.setattr(store_edge, "OPTIMIZE_BUSY_S", 0.2)
    store = EdgeStore(tmp_path / "q", flush_interval_s=0.05, indexing_threshold_kb=1)
    x = random_points(1200, 32)
    quantized_collection(store, "int8", x)
    deadline = time.monotonic() + 30
    i = 0
    while store.indexed("int8") < len(x) and time.monotonic() < deadline:
        i += 1  # overwrite one point at a time, as a storm of updates does
        store.upsert("int8", [PointRecord(i % 64, {"v": x[i % 64].tolist()}, {})])
        time.sleep(0.01)
    assert store.indexed("int8") >= len(x) - 64 and store.count("int8") == len(x)
    store.close()


@pytest.mark.parametrize(("factor", "at_least", "at_most"), [(0.0, 3, 100), (1e6, 1, 1)])
def test_busy_optimisations_are_spaced_by_their_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, factor: float, at_least: int, at_most: int
) -> None:
    """An optimisation holds the process (the engine keeps the GIL), so under constant writes
    the next one waits OPTIMIZE_BUSY_FACTOR times the last one's duration: with a huge factor
    there is one in 1.5 s of writes, with none one every OPTIMIZE_BUSY_S (0.2 s)."""
    monkeypatch.setattr(store_edge, "OPTIMIZE_IDLE_S", 3600.0)
    monkeypatch.setattr(store_edge, "OPTIMIZE_BUSY_S", 0.2)
    monkeypatch.setattr(store_edge, "OPTIMIZE_BUSY_FACTOR", factor)
    store = EdgeStore(tmp_path / "q", flush_interval_s=0.05, indexing_threshold_kb=1)
    x = random_points(300, 32)
    quantized_collection(store, "int8", x)
    runs: list[float] = []
    real = store.optimize

    def counted(name: str) -> bool:
        runs.append(time.monotonic())
        return real(name)

    monkeypatch.setattr(store, "optimize", counted)  # the maintenance thread calls self.optimize
    deadline = time.monotonic() + 1.5
    i = 0
    while time.monotonic() < deadline:
        i += 1
        store.upsert("int8", [PointRecord(i % 64, {"v": x[i % 64].tolist()}, {})])
        time.sleep(0.01)
    store.close()
    assert at_least <= len(runs) <= at_most


def test_server_requests_carry_the_quantisation(monkeypatch: pytest.MonkeyPatch) -> None:
    """qdrant-client's local engine ignores quantisation, so the calls it is handed are
    checked as the server would get them: valid REST bodies with the right configs."""
    from qdrant_client import models as qm

    store = ServerStore(":memory:")
    seen: dict[str, dict] = {}
    for method in ("create_collection", "query_points"):
        real = getattr(store.client, method)

        def spy(*args, _real=real, _name=method, **kwargs):  # type: ignore[no-untyped-def]
            seen[_name] = kwargs
            return _real(*args, **kwargs)

        monkeypatch.setattr(store.client, method, spy)
    x = random_points(20, 8)
    quantized_collection(store, "int8", x)
    assert store.get("int8").quantization == "int8"  # in the collection's metadata
    body = qm.CreateCollection(
        vectors=seen["create_collection"]["vectors_config"],
        quantization_config=seen["create_collection"]["quantization_config"],
    ).model_dump(mode="json", exclude_none=True)
    assert body["quantization_config"] == {
        "scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}
    }
    assert body["vectors"]["v"]["on_disk"] is True  # the originals, for rescoring
    hits = store.search("int8", "v", x[3].tolist(), 3, None, QuantizedSearch(oversampling=2.0))
    assert hits[0].id == 3
    params = qm.SearchParams.model_validate(seen["query_points"]["search_params"])
    assert params.quantization == qm.QuantizationSearchParams(rescore=True, oversampling=2.0)
    binary = ServerStore(":memory:")
    monkeypatch.setattr(binary.client, "create_collection", lambda *a, **k: seen.update(b=k))
    monkeypatch.setattr(binary.client, "collection_exists", lambda name: False)
    binary.create(CollectionMeta("b", (SpaceIndex("s", "v", 8, "m"),), quantization="binary"))
    assert seen["b"]["quantization_config"] == qm.BinaryQuantization(
        binary=qm.BinaryQuantizationConfig(always_ram=True)
    )
    store.close()
