"""``polyclip index``: shards into one store, resumes, stays idempotent, and is what serve reads."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import qdrant_edge as qe
import yaml

from polyclip.__main__ import main
from polyclip.service.app import create_app
from polyclip.service.collections import Collections
from polyclip.service.config import load_settings
from polyclip.service.indexer import point_id, read_records, shard_of
from polyclip.service.store_edge import EdgeStore
from tests.live import live_server, local_client

WORDS = ["dog", "cat", "man", "woman", "child"]
PLACES = ["park", "street", "water", "grass"]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    rows = [{"text": f"a {w} in the {p} {i}", "lang": "en", "n": i}
            for i, (w, p) in enumerate((w, p) for w in WORDS for p in PLACES * 2)]  # fmt: skip
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def config(model_dirs: dict, tmp_path: Path) -> Path:
    cfg = {"models": {"clip-tiny": {"path": str(model_dirs["clip-tiny"])},
                      "student-tiny": {"path": str(model_dirs["student-tiny"])}},
           "aliases": {"teacher": "clip-tiny", "student": "student-tiny"},
           "data_dir": str(tmp_path / "store")}  # fmt: skip
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def index(config: Path, corpus: Path, tmp_path: Path, *extra: str) -> int:
    argv = ["index", "--config", str(config), "--model", "teacher", "--collection", "corpus",
            "--input", str(corpus), "--payload-fields", "lang,n", "--batch", "8",
            "--state-dir", str(tmp_path / "state"), *extra]  # fmt: skip
    return main(argv)


def stored(data_dir: Path) -> list[dict]:
    store = EdgeStore(data_dir)
    shard = store._shards["corpus"]
    points = shard.scroll(qe.ScrollRequest(limit=1000, with_payload=True, with_vector=False))[0]
    store.close()
    return [dict(p.payload) | {"id": str(p.id)} for p in points]


def test_two_shards_into_one_store_hold_every_item_once(
    config: Path, corpus: Path, tmp_path: Path
) -> None:
    assert index(config, corpus, tmp_path, "--shard", "0/2") == 0
    first = stored(tmp_path / "store")
    assert 0 < len(first) < 40
    assert index(config, corpus, tmp_path, "--shard", "1/2") == 0
    points = stored(tmp_path / "store")
    assert len(points) == 40 and len({p["id"] for p in points}) == 40
    assert sorted(p["n"] for p in points) == list(range(40))
    assert all(p["lang"] == "en" and p["text"].startswith("a ") for p in points)
    # The layout the API writes: a server opened on the store searches it, with the student.
    with local_client(create_app(load_settings(config))) as c:
        assert c.get("/collections/corpus").json()["points_count"] == 40
        r = c.post("/collections/corpus/search",
                   json={"query": {"text": "a dog in the park"}, "model": "student"})  # fmt: skip
        assert r.status_code == 200 and len(r.json()["results"]) == 10
    # Idempotent: the same corpus again, from scratch, leaves one point per item.
    assert index(config, corpus, tmp_path, "--state-dir", str(tmp_path / "fresh-state")) == 0
    assert len(stored(tmp_path / "store")) == 40


def test_an_interrupted_run_resumes_without_duplicates(
    config: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Collections.upsert
    calls = []

    async def flaky(self: Collections, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C (or a killed pod) after two batches
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(Collections, "upsert", flaky)
    assert index(config, corpus, tmp_path) == 130
    state = json.loads((tmp_path / "state" / "corpus-0-of-1.json").read_text())
    assert state["done"] == 16
    monkeypatch.setattr(Collections, "upsert", real)
    assert index(config, corpus, tmp_path) == 0
    points = stored(tmp_path / "store")
    assert len(points) == 40 and len({p["id"] for p in points}) == 40
    assert json.loads((tmp_path / "state" / "corpus-0-of-1.json").read_text())["done"] == 40


def test_refused_while_a_server_holds_the_store(
    config: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with live_server(load_settings(config)):
        assert index(config, corpus, tmp_path) == 2
    err = capsys.readouterr().err
    assert "in use by another process" in err and "Traceback" not in err


def test_readers_ids_and_shards(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one text\n\ntwo texts\n", encoding="utf-8")
    (tmp_path / "a.csv").write_text("text,lang\nein text,de\n", encoding="utf-8")
    assert list(read_records(tmp_path / "a.txt")) == [{"text": "one text"}, {"text": "two texts"}]
    assert list(read_records(tmp_path / "a.csv")) == [{"text": "ein text", "lang": "de"}]
    pq.write_table(pa.table({"text": ["p1", "p2"], "id": [5, 6]}), tmp_path / "a.parquet")
    assert [r["id"] for r in read_records(tmp_path / "a.parquet")] == [5, 6]
    assert point_id("c", "t") == point_id("c", "t") != point_id("d", "t")
    assert point_id("c", "t", "7") == 7
    with pytest.raises(ValueError, match="neither an unsigned integer nor a UUID"):
        point_id("c", "t", "x-1")
    assert {shard_of(point_id("c", str(i)), 3) for i in range(60)} == {0, 1, 2}
