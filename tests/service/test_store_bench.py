"""``polyclip store bench`` end to end on tiny models: both parts run through the store's own
code (real corpus: recall against exact search; synthetic: built and measured in children)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from polyclip.__main__ import main
from polyclip.encoders.load import load_text_encoder
from polyclip.service.store_bench import SETTINGS, StallMeter, _embed_cached
from tests.captions import write_aligned


def test_store_bench_reports_recall_memory_and_latency(model_dirs: dict, tmp_path: Path) -> None:
    data = write_aligned(tmp_path / "m30k", {"train": (40, 0), "val": (20, 40),
                                             "test_2016_flickr": (10, 60)})  # fmt: skip
    argv = ["store", "bench", "--teacher", str(model_dirs["clip-tiny"]),
            "--student", str(model_dirs["student-tiny"]), "--data", str(data), "--langs", "de",
            "--synthetic", "300", "--latency-queries", "20", "--work", str(tmp_path / "work"),
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "out/store.json").read_text())
    real = report["real"]
    assert real["documents"] == 70 and real["queries"] == {"de": 20}
    assert [(r["quantization"], r["setting"]) for r in real["rows"]] == [
        (kind, label) for kind, settings in SETTINGS.items() for label, _ in settings
    ]
    recall = {(r["quantization"], r["setting"]): r["recall@10"] for r in real["rows"]}
    assert recall[("none", "float HNSW")] == 100.0  # 70 vectors: below the HNSW threshold
    assert recall[("int8", "rescored")] >= 90.0
    # Binary codes of 16 dimensions lose neighbours; more candidates win them back.
    binary = [recall[("binary", label)] for label, _ in SETTINGS["binary"]]
    assert binary[0] < 100.0 and binary[1] <= binary[2] <= binary[3]
    for r in real["rows"]:
        assert 0 < r["p50_ms"] <= r["p95_ms"] and 0 <= r["r@1"] <= 100
    syn = report["synthetic"]
    assert [r["quantization"] for r in syn["rows"]] == ["none", "int8", "binary"]
    for r in syn["rows"]:
        assert r["vectors"] == 300 and r["disk_bytes_per_vector"] > 16 * 4
        assert 0 <= r["optimize_s"] <= r["build_s"] and 0 <= r["stall_s"] <= r["build_s"] + 0.1
        assert set(r["latency"]) == {label for label, _ in SETTINGS[r["quantization"]]}
        assert all(0 < lat["p50_ms"] <= lat["p95_ms"] for lat in r["latency"].values())
    assert "Recall@10 vs exact" in (tmp_path / "out/store.md").read_text()
    assert len(list((tmp_path / "work").glob("docs-teacher-*.npy"))) == 1  # cached for reruns


def test_stall_meter_sees_a_call_that_keeps_the_gil() -> None:
    """sum() over a range runs in C without releasing the GIL, as the engine's index build
    does: the meter's thread cannot tick meanwhile, and the gap is what it reports."""
    with StallMeter() as idle:
        time.sleep(0.3)  # releases the GIL: no stall
    assert idle.longest_s < 0.2
    with StallMeter() as held:
        start = time.perf_counter()
        sum(range(50_000_000))
        took = time.perf_counter() - start
    assert took > 0.2 and held.longest_s > 0.5 * took


def test_a_student_retrained_in_place_is_embedded_again(model_dirs: dict, tmp_path: Path) -> None:
    """Students share their teacher's space, so the cache is keyed on the folder's files: a
    student exported again into the same folder must not get the old one's embeddings."""
    model = tmp_path / "student"
    shutil.copytree(model_dirs["student-tiny"], model)
    texts = ["a dog runs", "two children play"]
    first = _embed_cached(tmp_path / "w", "q", str(model), load_text_encoder(model), texts, "query")
    assert len(list((tmp_path / "w").glob("q-*.npy"))) == 1
    _embed_cached(tmp_path / "w", "q", str(model), load_text_encoder(model), texts, "query")
    assert len(list((tmp_path / "w").glob("q-*.npy"))) == 1  # same files: the cache answers
    (model / "polyclip.json").write_text((model / "polyclip.json").read_text() + " ")
    again = _embed_cached(tmp_path / "w", "q", str(model), load_text_encoder(model), texts, "query")
    assert len(list((tmp_path / "w").glob("q-*.npy"))) == 2 and again.shape == first.shape
