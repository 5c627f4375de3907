"""Spaces are identities of weights: a copied teacher is the same space, two teachers with one
folder name are two, and collections and students from before space ids keep working."""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi.testclient import TestClient

from polyclip.service.app import create_app
from polyclip.service.config import ModelConfig, Settings
from polyclip.service.store import CollectionMeta, PointRecord, SpaceIndex
from polyclip.service.store_edge import EdgeStore
from tests.live import local_client
from tests.tiny import save_dual, save_student

DOCS = [{"id": 10 + i, "text": t} for i, t in enumerate(["a dog runs", "a red cat", "two men sit"])]


def serve(tmp_path: Path, models: dict[str, Path], aliases: dict[str, str]) -> TestClient:
    settings = Settings(
        models={name: ModelConfig(path=str(path)) for name, path in models.items()},
        aliases=aliases,
        data_dir=tmp_path / "qdrant",
        qdrant_url=None,
    )
    return local_client(create_app(settings))


def search(api: TestClient, name: str, model: str) -> dict:
    r = api.post(f"/collections/{name}/search", json={"query": {"text": "a dog"}, "model": model})
    return {"status": r.status_code, **r.json()}


def test_a_teacher_copied_elsewhere_serves_its_students(
    clip_dir: Path, model_dirs: dict, tmp_path: Path
) -> None:
    """The student was trained against tiny/clip; the teacher is mounted as /models/teacher."""
    mounted = shutil.copytree(clip_dir, tmp_path / "models" / "teacher")
    models = {"teacher-copy": mounted, "student-tiny": model_dirs["student-tiny"]}
    with serve(tmp_path, models, {"student": "student-tiny"}) as api:
        assert api.post("/collections", json={"name": "docs", "model": "teacher-copy"}).is_success
        assert api.post("/collections/docs/points", json={"items": DOCS}).is_success
        out = search(api, "docs", "student")
        assert out["status"] == 200 and len(out["results"]) == 3, out
        listed = {m["id"]: m["space"] for m in api.get("/v1/models").json()["data"]}
        assert listed["teacher-copy"] == listed["student-tiny"]


def test_two_teachers_with_one_folder_name_are_two_spaces(tmp_path: Path) -> None:
    one = save_dual("clip", tmp_path / "a" / "clip", seed=0)
    two = save_dual("clip", tmp_path / "b" / "clip", seed=1)  # same config, same folder name
    with serve(tmp_path, {"t1": one, "t2": two}, {}) as api:
        assert api.post("/collections", json={"name": "docs", "model": "t1"}).is_success
        assert api.post("/collections/docs/points", json={"items": DOCS}).is_success
        assert search(api, "docs", "t1")["status"] == 200
        out = search(api, "docs", "t2")
        assert out["status"] == 422 and out["error"]["code"] == "space_mismatch"
        r = api.post("/collections", json={"name": "both", "model": ["t1", "t2"]})
        assert r.status_code == 201 and len(r.json()["spaces"]) == 2


def test_legacy_folder_name_ids_still_work(clip_dir: Path, xlmr_dir: Path, tmp_path: Path) -> None:
    """A collection and a student card written by polyclip before space ids: both name the
    teacher's folder ("clip"); served beside that teacher, they resolve to its id."""
    store = EdgeStore(tmp_path / "qdrant")
    store.create(CollectionMeta("old", (SpaceIndex("clip", "clip", 16, "teacher"),)))
    store.upsert("old", [PointRecord(1, {"clip": [1.0] + [0.0] * 15}, {"text": "a dog"})])
    store.close()
    legacy_student = save_student(xlmr_dir, tmp_path / "legacy-student", space="clip")
    models = {"clip-tiny": clip_dir, "old-student": legacy_student}
    with serve(tmp_path, models, {"teacher": "clip-tiny"}) as api:
        listed = {m["id"]: m["space"] for m in api.get("/v1/models").json()["data"]}
        assert listed["old-student"] == listed["clip-tiny"] != "clip"
        for model in ("teacher", "old-student"):
            out = search(api, "old", model)
            assert out["status"] == 200 and out["results"][0]["id"] == 1, out
        r = api.post("/collections/old/points", json={"items": DOCS})  # index model: teacher
        assert r.status_code == 200, r.text
        assert api.get("/collections/old").json()["points_count"] == 4
