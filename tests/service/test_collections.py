"""Collections end to end through the API, on the embedded store and on the server path.

The point of the service: a collection indexed by the teacher is searched by a student
distilled into the teacher's space, with no re-indexing; anything else is refused with a 422
that says why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from polyclip.encoders.load import load_encoders
from polyclip.service.app import create_app
from polyclip.service.config import Settings, load_settings
from polyclip.service.store import CollectionMeta, PointRecord, SpaceIndex
from tests.images import b64, png_bytes
from tests.live import local_client

DOCS = [
    {"id": 1, "text": "a dog runs in the park", "payload": {"lang": "en"}},
    {"id": 2, "text": "two children sit on the street", "payload": {"lang": "en"}},
    {"id": 3, "text": "ein hund läuft im park", "payload": {"lang": "de"}},
    {
        "id": "6f1c2a4e-0000-4000-8000-000000000001",
        "text": "un chat rouge",
        "payload": {"lang": "fr"},
    },
]


@pytest.fixture(params=["edge", "server"])
def api(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Iterator[TestClient]:
    url = ":memory:" if request.param == "server" else None
    with local_client(create_app(make_settings(qdrant_url=url))) as c:
        yield c


def index(api: TestClient, name: str = "docs", model: str | list[str] = "teacher") -> None:
    assert api.post("/collections", json={"name": name, "model": model}).status_code == 201
    r = api.post(f"/collections/{name}/points", json={"items": DOCS})
    assert r.status_code == 200, r.text


def search(api: TestClient, name: str = "docs", **body: object) -> dict:
    r = api.post(f"/collections/{name}/search", json={"query": {"text": "a dog"}, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_create_get_list_delete(api: TestClient, clip_space: str) -> None:
    r = api.post("/collections", json={"name": "docs", "model": "teacher"})
    assert r.status_code == 201
    vector = clip_space.replace("@", "_")
    assert r.json()["spaces"] == [
        {"space": clip_space, "vector": vector, "dimension": 16, "model": "teacher"}
    ]
    assert api.post("/collections", json={"name": "docs", "model": "teacher"}).status_code == 409
    assert api.get("/collections").json() == {"collections": ["docs"]}
    assert api.get("/collections/docs").json()["points_count"] == 0
    assert api.delete("/collections/docs").status_code == 204
    for r in (api.get("/collections/docs"), api.delete("/collections/docs")):
        assert r.status_code == 404 and r.json()["error"]["code"] == "collection_not_found"


def test_quantized_collections_through_the_api(api: TestClient) -> None:
    r = api.post("/collections", json={"name": "q8", "model": "teacher", "quantization": "int8"})
    assert r.status_code == 201 and r.json()["quantization"] == "int8"
    assert api.get("/collections/q8").json()["indexed_vectors_count"] == 0
    assert api.post("/collections/q8/points", json={"items": DOCS}).status_code == 200
    body = {"query": {"text": DOCS[0]["text"]}, "quantization": {"oversampling": 2.0}}
    found = api.post("/collections/q8/search", json=body).json()
    assert found["results"][0]["id"] == 1 and found["results"][0]["score"] == pytest.approx(1.0)
    bad = api.post("/collections", json={"name": "q4", "model": "teacher", "quantization": "fp4"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "quantization"
    over = {"query": {"text": "a"}, "quantization": {"oversampling": 100}}
    r = api.post("/collections/q8/search", json=over)
    assert r.status_code == 422 and r.json()["error"]["field"] == "quantization.oversampling"
    assert api.get("/collections/docs").status_code == 404  # nothing else was created


def test_upsert_returns_ids_and_search_finds_the_exact_text(api: TestClient) -> None:
    assert api.post("/collections", json={"name": "docs", "model": "teacher"}).status_code == 201
    r = api.post("/collections/docs/points", json={"items": [*DOCS, {"text": "no id given"}]})
    body = r.json()
    assert body["ids"][:4] == [d["id"] for d in DOCS] and body["count"] == 5
    assert len(body["ids"][4]) == 36  # a generated UUID
    for doc in DOCS:
        hits = search(api, query={"text": doc["text"]}, limit=2)["results"]
        assert hits[0]["id"] == doc["id"] and hits[0]["score"] == pytest.approx(1, abs=1e-4)
        assert hits[0]["payload"] == doc["payload"]


def test_student_queries_the_teacher_index(
    api: TestClient, model_dirs: dict, clip_space: str
) -> None:
    index(api)
    out = search(api, model="student", limit=4)
    assert (out["model"], out["space"]) == ("student", clip_space) and len(out["results"]) == 4
    student, _ = load_encoders(model_dirs["student-tiny"])
    teacher, _ = load_encoders(model_dirs["clip-tiny"])
    q = student.encode(["a dog"], prefix="query")[0]
    docs = teacher.encode([d["text"] for d in DOCS], prefix="passage")
    want = [DOCS[i]["id"] for i in np.argsort(-(docs @ q))]
    assert [h["id"] for h in out["results"]] == want


def test_incompatible_space_and_dimension_are_422_with_a_reason(
    api: TestClient, clip_space: str
) -> None:
    index(api)
    r = api.post("/collections/docs/search", json={"query": {"text": "x"}, "model": "other-tiny"})
    err = r.json()["error"]
    assert r.status_code == 422 and err["code"] == "space_mismatch" and err["field"] == "model"
    assert "'other'" in err["message"] and f"['{clip_space}']" in err["message"]
    assert f"distilled into '{clip_space}'" in err["message"]
    r = api.post("/collections/docs/points", json={"model": "baddim-tiny", "items": DOCS[:1]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "dimension_mismatch"
    r = api.post("/collections/docs/search", json={"query": {"text": "x"}, "model": "baddim-tiny"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "dimension_mismatch"


def test_lang_and_filters(api: TestClient) -> None:
    index(api)
    assert [h["id"] for h in search(api, lang="de")["results"]] == [3]
    flt = {"must_not": [{"key": "lang", "match": {"any": ["en", "de"]}}]}
    assert [h["id"] for h in search(api, filter=flt)["results"]] == [DOCS[3]["id"]]
    bad = api.post(
        "/collections/docs/search",
        json={"query": {"text": "x"}, "filter": {"must": [{"key": "a"}]}},
    )
    assert bad.status_code == 422


def test_delete_points_by_ids_and_by_filter(api: TestClient) -> None:
    index(api)
    r = api.request("DELETE", "/collections/docs/points", json={"ids": [1, 99]})
    assert r.json() == {"collection": "docs", "deleted": 1}
    flt = {"must": [{"key": "lang", "match": {"value": "en"}}]}
    r = api.request("DELETE", "/collections/docs/points", json={"filter": flt})
    assert r.json()["deleted"] == 1
    assert api.get("/collections/docs").json()["points_count"] == 2
    both = api.request("DELETE", "/collections/docs/points", json={"ids": [3], "filter": flt})
    assert both.status_code == 422


def test_shadow_search_reports_overlap_and_a_metric(api: TestClient) -> None:
    index(api)
    out = search(api, model="student", shadow="teacher", limit=3)
    shadow = out["shadow"]
    assert shadow["model"] == "teacher" and shadow["k"] == 3 and len(shadow["results"]) == 3
    mine, theirs = {h["id"] for h in out["results"]}, {h["id"] for h in shadow["results"]}
    assert shadow["overlap"] == pytest.approx(len(mine & theirs) / 3)
    metrics = api.get("/metrics").text
    assert (
        'te_shadow_overlap_count{collection="docs",model="student-tiny",shadow="clip-tiny"} 1.0'
        in metrics
    )
    r = api.post("/collections/docs/search", json={"query": {"text": "x"}, "shadow": "other-tiny"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "shadow"


def test_images_index_and_query_in_the_same_space(api: TestClient) -> None:
    assert api.post("/collections", json={"name": "pics", "model": "teacher"}).status_code == 201
    red, blue = png_bytes(color="red"), png_bytes(color="blue")
    items = [
        {"id": 1, "image": b64(red)},
        {"id": 2, "image": b64(blue)},
        {"id": 3, "text": "a dog"},
    ]
    assert api.post("/collections/pics/points", json={"items": items}).status_code == 200
    hits = search(api, "pics", query={"image": b64(blue)})["results"]
    assert hits[0]["id"] == 2 and hits[0]["score"] == pytest.approx(1, abs=1e-4)
    r = api.post(
        "/collections/pics/search", json={"query": {"image": b64(red)}, "model": "student"}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_image_tower"


def test_a_collection_in_two_spaces(api: TestClient, clip_space: str) -> None:
    index(api, "multi", ["teacher", "other-tiny"])
    assert len(api.get("/collections/multi").json()["spaces"]) == 2
    assert search(api, "multi", model="other-tiny")["space"] == "other"
    assert search(api, "multi", model="student")["space"] == clip_space
    r = api.post("/collections/multi/points", json={"model": "student", "items": DOCS[:1]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "missing_spaces"
    r = api.post("/collections", json={"name": "dup", "model": ["teacher", "student"]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "duplicate_space"


def test_repointing_an_alias_needs_no_reindexing(api: TestClient, clip_space: str) -> None:
    index(api)
    r = api.post("/collections/docs/search", json={"query": {"text": "x"}, "model": "search-query"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = api.put("/admin/aliases/search-query", json={"target": "teacher"})
    assert r.status_code == 200 and r.json()["aliases"]["search-query"] == "clip-tiny"
    assert search(api, model="search-query")["space"] == clip_space
    api.put("/admin/aliases/search-query", json={"target": "student-tiny"})
    assert search(api, model="search-query")["results"]  # same index, the student's queries
    r = api.put("/admin/aliases/teacher", json={"target": "other-tiny"})
    assert r.status_code == 200
    r = api.post("/collections/docs/points", json={"items": DOCS[:1]})  # index model moved space
    assert r.status_code == 422 and r.json()["error"]["code"] == "space_mismatch"
    assert api.put("/admin/aliases/clip-tiny", json={"target": "teacher"}).status_code == 409
    assert api.put("/admin/aliases/x", json={"target": "nope"}).status_code == 404


def test_reload_repoints_aliases_and_loads_only_what_changed(
    model_dirs: dict, tmp_path: Path
) -> None:
    def write(student_alias: str, other_batch: int = 64) -> None:
        lines = ["models:"] + [f"  {n}: {{path: '{p}'}}" for n, p in model_dirs.items()]
        lines[-1] = lines[-1][:-1] + f", max_batch_size: {other_batch}}}"
        lines += ["aliases:", "  teacher: clip-tiny", f"  student: {student_alias}"]
        lines += [f"data_dir: '{tmp_path / 'q'}'"]
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")

    config = tmp_path / "models.yaml"
    write("student-tiny")

    with local_client(create_app(load_settings(config), config)) as c:
        write("clip-tiny")
        r = c.post("/admin/reload")
        assert r.status_code == 200, r.text
        assert r.json()["aliases"]["student"] == "clip-tiny" and r.json()["loaded"] == []
        write("clip-tiny", other_batch=8)  # one model's config changed: only it reloads
        r = c.post("/admin/reload")
        assert r.json()["loaded"] == [list(model_dirs)[-1]], r.text
        assert (
            c.post("/embed/text", json={"model": "baddim-tiny", "texts": ["a"]}).status_code == 200
        )
        config.write_text("models: {}\n", encoding="utf-8")
        r = c.post("/admin/reload")
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_config"
        assert c.get("/v1/models").status_code == 200  # the old registry still serves


class CountingClient:
    """A qdrant-client stand-in that forwards every call and records the method names."""

    def __init__(self, client: object, calls: list[str]) -> None:
        self._client, self._calls = client, calls

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: object, **kwargs: object) -> object:
            self._calls.append(name)
            return attr(*args, **kwargs)

        return call


def test_a_server_search_is_one_qdrant_call_and_survives_other_replicas(
    make_settings: Callable[..., Settings], clip_space: str
) -> None:
    settings = make_settings(qdrant_url=":memory:")
    with local_client(create_app(settings)) as api:
        index(api)
        store = api.app.state.svc.collections.store
        calls: list[str] = []
        store.client = CountingClient(store.client, calls)
        search(api)
        search(api, model="student")
        assert calls == ["query_points", "query_points"]
        calls.clear()
        api.get("/collections/docs")
        assert calls == ["count", "get_collection"]  # exact count, then the indexed share
        # Another replica drops the collection and re-creates it with another vector name.
        store.drop("docs")
        space = SpaceIndex(clip_space, "renamed", 16, "teacher")
        store.create(CollectionMeta("docs", (space,)))
        store.upsert("docs", [PointRecord(7, {"renamed": [1.0] + [0.0] * 15}, {})])
        calls.clear()
        out = search(api)
        assert [h["id"] for h in out["results"]] == [7]
        assert calls == ["query_points", "get_collection", "query_points"]  # failed, refetch, retry
        store.drop("docs")  # and now gone everywhere: a 404, not a 503
        r = api.post("/collections/docs/search", json={"query": {"text": "a dog"}})
        assert r.status_code == 404 and r.json()["error"]["code"] == "collection_not_found"
