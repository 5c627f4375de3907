"""``polyclip bench`` against the real service, started as ``polyclip serve`` in a subprocess.

Two tiny random models share one embedding space (``tiny-space``): the teacher indexes, both
query, as a teacher and its distilled student would. The server has an API key and a small
text limit, so the auth header and the error-rate gate are exercised against real answers.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
import yaml

from polyclip.__main__ import main
from polyclip.bench.data import CAPTIONS
from polyclip.encoders.captions import texts_sha256
from polyclip.encoders.embedding_types import write_calibration
from polyclip.encoders.sentence import SentenceEncoder
from tests.live import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]
KEY = "bench-test-key"
MAX_TEXT_CHARS = 200
# Distinct word sequences from the tiny tokenizer's vocabulary (tests/tiny.py), line-aligned.
EN = [
    "a dog runs in the park",
    "a cat sits on the street",
    "two man walks in water",
    "a woman sits in the park",
    "a child runs on the street",
    "a red dog and a blue cat",
    "two child with a dog",
    "a man walks with a cat",
    "the blue water",
    "a woman and a child in the street",
    "red cat sits on blue water",
    "two dog runs with the man",
]
DE = [
    "ein hund läuft im park",
    "katze sitzt auf der park",
    "zwei mann läuft im wasser",
    "frau sitzt im park",
    "ein kind läuft auf der park",
    "ein rot hund und blau katze",
    "zwei kind mit ein hund",
    "ein mann läuft mit katze",
    "der blau wasser",
    "frau und kind im park",
    "rot katze sitzt auf blau wasser",
    "zwei hund läuft mit der mann",
]


def _tiny_model(backbone: Path, out: Path, name: str, seed: int) -> Path:
    """A tiny student with int8 calibration ranges (its embeddings of the toy captions)."""
    torch.manual_seed(seed)
    enc = SentenceEncoder.new_student(
        backbone, dimension=16, space="tiny-space", teacher="tiny-teacher", name=name
    )
    path = enc.save(out)
    write_calibration(path, enc.encode(EN + DE, prefix="passage"))
    return path


@pytest.fixture(scope="module")
def server(xlmr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A live ``polyclip serve`` on a free loopback port; stopped (SIGTERM) afterwards."""
    root = tmp_path_factory.mktemp("live")
    config = {
        "models": {
            "tiny-teacher": {"path": str(_tiny_model(xlmr_dir, root / "t", "tiny-teacher", 1))},
            "tiny-student": {"path": str(_tiny_model(xlmr_dir, root / "s", "tiny-student", 2))},
        },
        "aliases": {"teacher": "tiny-teacher", "student": "tiny-student"},
        "data_dir": str(root / "qdrant"),
        "api_key": KEY,
        "limits": {"max_text_chars": MAX_TEXT_CHARS},
    }
    cfg = root / "models.yaml"
    cfg.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYCLIP_", "QDRANT_"))}
    cmd = [sys.executable, "-m", "polyclip", "serve", "--config", str(cfg), "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _bench(*argv: str) -> int:
    return main(["bench", *argv, "--api-key", KEY])


def test_probe_paths_are_served(server: str) -> None:
    """The paths deploy/ probes and scrapes (tests/test_deploy.py) exist on the real server."""
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(server + path, timeout=5).status_code == 200, path


def test_load(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["load", "--url", server, "--model", "student", "--concurrency", "1,4"]
    argv += ["--batch", "1,8", "--requests", "12", "--out", str(tmp_path)]
    assert _bench(*argv) == 0
    out = capsys.readouterr().out
    assert "client CPU" in out and "load.png" in out
    report = json.loads((tmp_path / "load.json").read_text("utf-8"))
    levels = {(lv["batch"], lv["concurrency"]): lv for lv in report["levels"]}
    assert set(levels) == {(1, 1), (1, 4), (8, 1), (8, 4)}
    for (batch, _), lv in levels.items():
        assert lv["requests"] == lv["ok"] == 12 and lv["errors"] == {} and lv["error_rate"] == 0
        assert lv["items"] == 12 * batch
        assert lv["items_per_s"] == pytest.approx(lv["requests_per_s"] * batch, rel=1e-3)
        lat = lv["latency"]
        assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert lv["client_cpu_s"] >= 0
    assert report["config"]["api_key"] == "***"  # the key never lands in a report
    # What was sent, so `polyclip export efficiency` can check it measures the same texts.
    assert report["texts"] == {
        "file": None,
        "count": len(CAPTIONS),
        "sha256": texts_sha256(CAPTIONS),
    }
    md = (tmp_path / "load.md").read_text("utf-8")
    assert md.count("\n| 8 | 4 | 12 | 12 |") == 1
    assert (tmp_path / "load.png").read_bytes()[:4] == b"\x89PNG"


def test_load_stops_at_duration_on_embed_endpoint(server: str, tmp_path: Path) -> None:
    argv = ["load", "--url", server, "--model", "teacher", "--concurrency", "2"]
    argv += ["--endpoint", "embed", "--input-type", "query", "--duration", "0.5s"]
    argv += ["--requests", "1000000", "--out", str(tmp_path)]
    assert _bench(*argv) == 0
    (lv,) = json.loads((tmp_path / "load.json").read_text("utf-8"))["levels"]
    assert 0 < lv["ok"] < 1000000 and lv["elapsed_s"] < 10


def test_load_fails_above_error_rate(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Half the texts are over the server's limit: the run is reported, then exits 2."""
    texts = tmp_path / "texts.txt"
    texts.write_text("a dog runs\n" + "dog " * MAX_TEXT_CHARS + "\n", encoding="utf-8")
    argv = ["load", "--url", server, "--model", "student", "--concurrency", "2"]
    argv += ["--requests", "10", "--warmup", "0", "--texts", str(texts), "--out", str(tmp_path)]
    assert _bench(*argv) == 2
    assert "above --max-error-rate 0.01" in capsys.readouterr().err
    (lv,) = json.loads((tmp_path / "load.json").read_text("utf-8"))["levels"]
    assert lv["ok"] == 5 and sum(lv["errors"].values()) == 5
    assert all(400 <= int(code) < 500 for code in lv["errors"])


def test_load_without_key_is_a_clear_error(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "load", "--url", server, "--model", "student", "--requests", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "answered 401" in err and "\n" not in err and "Traceback" not in err


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("multi30k")
    for lang, lines in (("en", EN), ("de", DE)):
        with gzip.open(root / f"tiny.{lang}.gz", "wt", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return root


def test_quality(
    server: str, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["quality", "--url", server, "--data", str(data_dir), "--split", "tiny"]
    argv += ["--langs", "en,de", "--index-model", "teacher", "--query-model", "teacher"]
    argv += ["--query-model", "student", "--concurrency", "2", "--out", str(tmp_path)]
    assert _bench(*argv) == 0
    assert "teacher: R@1 en 100.0" in capsys.readouterr().out
    report = json.loads((tmp_path / "quality.json").read_text("utf-8"))
    assert report["documents"] == len(EN)
    assert {m["id"] for m in report["server_models"]} >= {"teacher", "student"}
    assert list(report["results"]) == ["teacher", "student"]
    for res in report["results"].values():
        for m in [*res["langs"].values(), res["mean"]]:
            assert 0 <= m["r@1"] <= m["r@5"] <= m["r@10"] <= 100
            assert 0 <= m["mrr@10"] <= 1
        for m in res["langs"].values():
            assert m["queries"] == len(EN) and 0 < m["p50_ms"] <= m["p95_ms"]
    # The teacher's own English queries find their own documents: identical vectors.
    teacher_en = report["results"]["teacher"]["langs"]["en"]
    assert teacher_en["r@1"] == 100.0 and teacher_en["mrr@10"] == 1.0
    md = (tmp_path / "quality.md").read_text("utf-8")
    assert "| teacher | en | 12 | 100.0 |" in md and "**student** | **mean**" in md
    assert (tmp_path / "quality.png").read_bytes()[:4] == b"\x89PNG"
    gone = httpx.get(
        f"{server}/collections/{report['collection']}",
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5,
    )
    assert gone.status_code == 404  # the run's collection was dropped


def test_quality_keep_and_existing_collection(
    server: str, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--keep leaves the collection; a second run on that name fails and does not drop it."""
    argv = ["quality", "--url", server, "--data", str(data_dir), "--split", "tiny"]
    argv += ["--langs", "de", "--limit", "4", "--collection", "bench-kept", "--out", str(tmp_path)]
    assert _bench(*argv, "--keep") == 0
    assert json.loads((tmp_path / "quality.json").read_text("utf-8"))["documents"] == 4
    assert _bench(*argv) == 2
    assert "409" in capsys.readouterr().err
    auth = {"Authorization": f"Bearer {KEY}"}
    kept = httpx.get(f"{server}/collections/bench-kept", headers=auth, timeout=5)
    assert kept.status_code == 200 and kept.json()["points_count"] == 4
    httpx.delete(f"{server}/collections/bench-kept", headers=auth, timeout=5)


def test_quality_checks_models_before_indexing(
    server: str, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["quality", "--url", server, "--data", str(data_dir), "--split", "tiny"]
    assert _bench(*argv, "--langs", "de", "--query-model", "nope") == 2
    assert "the server has no model 'nope'" in capsys.readouterr().err
    auth = {"Authorization": f"Bearer {KEY}"}
    names = httpx.get(f"{server}/collections", headers=auth, timeout=5).json()["collections"]
    assert not [n for n in names if n.startswith("bench-quality-")]  # nothing was indexed


def test_load_reports_server_cpu_and_noise(server: str, tmp_path: Path) -> None:
    argv = ["load", "--url", server, "--model", "student", "--concurrency", "2"]
    argv += ["--requests", "10", "--noise-batch", "16", "--noise-clients", "1"]
    argv += ["--out", str(tmp_path)]
    assert _bench(*argv) == 0
    level = json.loads((tmp_path / "load.json").read_text("utf-8"))["levels"][0]
    assert level["server_cpu_s"] > 0 and level["server_cpu_s_per_1k_items"] > 0
    assert level["noise"]["batch"] == 16 and level["noise"]["ok"] >= 1
    assert level["ok"] == 10  # the background requests are not counted in the level


def test_soak(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["soak", "--url", server, "--rate", "20", "--duration", "3s", "--clients", "8",
            "--out", str(tmp_path)]  # fmt: skip
    assert _bench(*argv) == 0
    report = json.loads((tmp_path / "soak.json").read_text("utf-8"))
    assert report["errors_total"] == 0
    assert sum(op["sent"] for op in report["ops"].values()) == 60
    assert all(op["ok"] == op["sent"] for op in report["ops"].values())
    assert report["server"]["start"]["rss_bytes"] > 0 and report["server"]["end"]["threads"] > 0
    assert report["server"]["end"]["rss_anon_bytes"] > 0
    assert report["server"]["end"]["trimmed_bytes"] >= 0  # the server's heap trims, counted
    assert (tmp_path / "soak.png").read_bytes()[:4] == b"\x89PNG"
    assert "search:" in capsys.readouterr().out
    names = httpx.get(f"{server}/collections", headers={"Authorization": f"Bearer {KEY}"})
    assert not [n for n in names.json()["collections"] if n.startswith("bench-soak-")]


def test_soak_mix_and_a_fixed_set_of_upserted_ids(server: str, tmp_path: Path) -> None:
    """--mix without upserts stores nothing; --upsert-ids N overwrites N points in turn."""
    argv = ["soak", "--url", server, "--rate", "20", "--duration", "2s", "--clients", "4",
            "--mix", "embed=1,search=1,upsert=0", "--out", str(tmp_path)]  # fmt: skip
    assert _bench(*argv) == 0
    report = json.loads((tmp_path / "soak.json").read_text("utf-8"))
    assert report["ops"]["upsert"]["sent"] == 0 and report["errors_total"] == 0
    assert report["ops"]["embed"]["sent"] + report["ops"]["search"]["sent"] == 40
    assert report["collection_points"] == len(CAPTIONS[:64])  # the seed points only
    argv = ["soak", "--url", server, "--rate", "20", "--duration", "2s", "--clients", "4",
            "--mix", "upsert=1", "--upsert-ids", "3", "--out", str(tmp_path)]  # fmt: skip
    assert _bench(*argv) == 0
    report = json.loads((tmp_path / "soak.json").read_text("utf-8"))
    assert report["ops"]["upsert"]["ok"] == 40 and report["errors_total"] == 0
    assert report["collection_points"] == len(CAPTIONS[:64]) + 3


def test_types(server: str, data_dir: Path, tmp_path: Path) -> None:
    argv = ["types", "--url", server, "--data", str(data_dir), "--split", "tiny"]
    argv += ["--langs", "de", "--out", str(tmp_path)]
    assert _bench(*argv) == 0
    report = json.loads((tmp_path / "types.json").read_text("utf-8"))
    rows = {r["type"]: r for r in report["rows"]}
    assert list(rows) == ["float", "int8", "uint8", "binary", "ubinary"]
    assert {t: r["dimension_bytes"] for t, r in rows.items()} == {
        "float": 64, "int8": 16, "uint8": 16, "binary": 2, "ubinary": 2
    }  # fmt: skip
    float_r1 = rows["float"]["mean_r@1"]
    assert len(set(float_r1.values())) == 1  # float vectors: every setting is the exact search
    for kind, r in rows.items():  # 100 candidates hold all 12 documents: rescoring is exact
        assert r["mean_r@1"]["both_quantised_rescored"] == float_r1["queries_quantised"]
        asymmetric = r["mean_r@1"]["queries_quantised_rescored"]
        if kind in ("int8", "uint8"):  # codes without the calibration: not scored
            assert asymmetric is None and r["mean_r@1"]["queries_quantised"] is None
        else:
            assert asymmetric == float_r1["queries_quantised"]
    assert rows["binary"]["base64_bytes_per_text"] < rows["int8"]["base64_bytes_per_text"]
    assert rows["int8"]["base64_bytes_per_text"] < rows["float"]["base64_bytes_per_text"]
    assert rows["float"]["base64_bytes_per_text"] < rows["float"]["json_bytes_per_text"]
    assert "| binary | 2 |" in (tmp_path / "types.md").read_text("utf-8")
