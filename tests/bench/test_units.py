"""bench's parts that need no server: argument parsing, budgets, counting, reports."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from polyclip.__main__ import main
from polyclip.bench.client import BenchError, latency_summary, server_message
from polyclip.bench.data import CAPTIONS, read_lines
from polyclip.bench.load import LoadConfig, _Level, _worker, failed_levels
from polyclip.bench.report import write_report
from polyclip.encoders.argtypes import int_list, parse_duration, positive_int
from polyclip.encoders.captions import read_parallel
from polyclip.encoders.errors import EncoderError


def test_parse_duration_and_lists() -> None:
    assert parse_duration("30s") == 30.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120.0
    assert parse_duration("1.5") == 1.5
    assert int_list("1,4,16,64") == [1, 4, 16, 64]
    assert positive_int("7") == 7
    for bad in ("0s", "abc", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)
    for bad in ("0", "a,b", "", "1,-2"):
        with pytest.raises(argparse.ArgumentTypeError):
            int_list(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        positive_int("2,3")


def test_level_stops_at_count_and_at_deadline() -> None:
    level = _Level(["a", "b", "c"], batch=2, requests=3, seconds=60)
    batches = [level.take() for _ in range(4)]
    assert batches == [["a", "b"], ["c", "a"], ["b", "c"], None]  # texts cycle; count honoured
    timed = _Level(["a"], batch=1, requests=None, seconds=0.05)
    assert timed.take() == ["a"]
    time.sleep(0.06)
    assert timed.take() is None and timed.issued == 1  # the deadline is honoured too


def test_latency_summary() -> None:
    out = latency_summary([0.001 * i for i in range(1, 101)])
    assert out["p50_ms"] == pytest.approx(50.5) and out["max_ms"] == pytest.approx(100.0)
    assert out["p50_ms"] <= out["p95_ms"] <= out["p99_ms"] <= out["max_ms"]
    assert latency_summary([])["p50_ms"] is None


def test_server_message_shapes() -> None:
    err = {"error": {"code": "bad", "message": "texts too long", "field": "texts[1]"}}
    assert server_message(httpx.Response(400, json=err)) == "texts too long (field texts[1])"
    assert server_message(httpx.Response(422, json={"detail": "nope"})) == "nope"
    assert server_message(httpx.Response(502, text="Bad Gateway")) == "Bad Gateway"


def test_worker_counts_statuses_and_honours_retry_after() -> None:
    """429 (with Retry-After), a short answer and a success are each counted as such."""
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "0.2"}, json={}),
            httpx.Response(200, json={"data": []}),  # no embedding for one input: bad_response
            httpx.Response(200, json={"data": [{"embedding": [1.0]}]}),
        ]
    )
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return next(answers)

    cfg = LoadConfig(url="http://x", model="m", concurrency=[1], input_type="query")
    level = _Level(["t"], batch=1, requests=3, seconds=30)

    async def run() -> float:
        transport = httpx.MockTransport(handler)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
            t0 = time.perf_counter()
            await _worker(c, cfg, level)
            return time.perf_counter() - t0

    elapsed = asyncio.run(run())
    assert dict(level.errors) == {"429": 1, "bad_response": 1} and len(level.latencies) == 1
    assert elapsed >= 0.2  # backed off as told
    assert sent[0] == {
        "input": ["t"],
        "model": "m",
        "encoding_format": "float",
        "input_type": "query",
    }


def test_embed_endpoint_body() -> None:
    cfg = LoadConfig(url="u", model="m", concurrency=[1], endpoint="embed", input_type="query")
    assert cfg.path == "/embed/text"
    assert cfg.body(["a"]) == {"model": "m", "texts": ["a"], "prefix": "query"}
    assert cfg.count(httpx.Response(200, json={"embeddings": [[1.0], [2.0]]})) == 2


def test_failed_levels_uses_the_threshold() -> None:
    report = {
        "config": {"max_error_rate": 0.01},
        "levels": [
            {"error_rate": 0.0, "requests": 10},
            {"error_rate": 0.02, "requests": 10},
            {"error_rate": 0.0, "requests": 0},
        ],
    }
    assert [lv["error_rate"] for lv in failed_levels(report)] == [0.02, 0.0]


def test_read_texts(tmp_path: Path) -> None:
    plain = tmp_path / "t.txt"
    plain.write_text("a\n\n b \n", encoding="utf-8")
    assert read_lines(plain) == ["a", "b"]
    packed = tmp_path / "val.de.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write("ein hund\n")
    assert read_lines(packed) == ["ein hund"]
    with gzip.open(tmp_path / "val.en.gz", "wt", encoding="utf-8") as f:
        f.write("a dog\na cat\n")
    # `bench quality` reads aligned splits with polyclip.encoders.captions.read_parallel
    with pytest.raises(EncoderError, match=r"val\.de\.gz:2: 1 lines, but .*val\.en\.gz has 2"):
        read_parallel(tmp_path, "val", ["de"])
    with pytest.raises(EncoderError, match=r"no val\.fr\.gz or val\.fr"):
        read_parallel(tmp_path, "val", ["fr"])
    with pytest.raises(BenchError, match="not found"):
        read_lines(tmp_path / "nope.txt")
    assert len(set(CAPTIONS)) == len(CAPTIONS) >= 30


def _level(batch: int, conc: int, p50: float | None) -> dict:
    lat = dict.fromkeys(("p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms"), p50)
    return {
        "batch": batch,
        "concurrency": conc,
        "requests": 10,
        "ok": 10 if p50 else 0,
        "items": 10 * batch,
        "errors": {} if p50 else {"503": 10},
        "error_rate": 0.0 if p50 else 1.0,
        "elapsed_s": 1.0,
        "requests_per_s": 10.0,
        "items_per_s": 10.0 * batch,
        "latency": lat,
        "client_cpu_s": 0.1,
        "client_cpu_s_per_1k_requests": 10.0,
    }


def test_reports_render_even_with_failed_levels(tmp_path: Path) -> None:
    cfg = {
        "model": "m",
        "url": "u",
        "endpoint": "openai",
        "texts": 3,
        "warmup": 1,
        "requests": 10,
        "duration_s": None,
    }
    levels = [_level(1, 1, 2.0), _level(1, 4, None), _level(8, 1, 5.0), _level(8, 4, 9.0)]
    report = {
        "kind": "load",
        "started_at": "now",
        "config": cfg,
        "levels": levels,
        "client_cpu_s_total": 0.4,
    }
    paths = write_report(report, tmp_path)
    assert json.loads(paths["json"].read_text("utf-8")) == report
    md = paths["md"].read_text("utf-8")
    assert "| 1 | 4 | 10 | 0 |" in md and "503×10" in md
    assert paths["load"].read_bytes()[:4] == b"\x89PNG"


def test_unreachable_server_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    load = ["bench", "load", "--url", url, "--model", "m", "--requests", "1"]
    assert main([*load, "--out", str(tmp_path)]) == 2
    with gzip.open(tmp_path / "v.en.gz", "wt", encoding="utf-8") as f:
        f.write("a dog\n")
    quality = ["bench", "quality", "--url", url, "--data", str(tmp_path), "--split", "v"]
    assert main([*quality, "--langs", "en", "--out", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all("cannot reach" in line for line in lines)
    assert not (tmp_path / "load.json").exists()


def test_binary_codes_score_as_agreeing_bits() -> None:
    """±1 unpacked bits: dot = D − 2·Hamming, for the int8 (binary) and uint8 (ubinary) forms."""
    from polyclip.bench.types import as_vectors, ranks, rescored
    from polyclip.encoders.embedding_types import quantize

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    bits = x > 0
    hamming = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    for kind in ("binary", "ubinary"):
        v = as_vectors(quantize(x, kind), kind, 24)
        np.testing.assert_array_equal(v @ v.T, 24 - 2 * hamming)
    scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.2, 0.1], [0.1, 0.3, 0.05]])
    assert ranks(scores).tolist() == [0, 1, 2]
    gold_ties = np.ones((3, 3))  # every document scores alike: rank uniform in 0..2
    spread = np.concatenate([ranks(gold_ties, seed=s) for s in range(300)])
    assert set(spread.tolist()) == {0, 1, 2} and abs(spread.mean() - 1.0) < 0.1
    v = as_vectors(np.array([[-128 + 0b10110000]], dtype=np.int16), "binary", 4)
    assert v.tolist() == [[1.0, -1.0, 1.0, 1.0]]  # 4 dimensions: the padding bits dropped
    exact = np.eye(3)  # the exact scores put every gold first
    assert rescored(scores, exact, k=2).tolist() == [0, 0, 2]  # query 2's gold not in its top 2


def test_peer_summary_takes_medians_over_rounds(tmp_path: Path) -> None:
    """Medians over the rounds that ran a level without errors, and polyclip int8 against the
    fastest of infinity's engines (torch, optimum int8, optimum fp32)."""
    from polyclip.bench.peers.summary import main as summary

    def level(items: float, p95: float, ok: int = 10) -> dict:
        return {"batch": 1, "concurrency": 16, "ok": ok, "error_rate": 0.0 if ok else 1.0,
                "items_per_s": items, "latency": {"p95_ms": p95}}  # fmt: skip

    runs = {"polyclip-int8": [300, 330, 310], "infinity-torch": [100, 90, 120],
            "infinity-optimum-int8": [80, 110, 105],
            "infinity-optimum-fp32": [70, 75, 72]}  # fmt: skip
    for server, speeds in runs.items():
        for r, items in enumerate(speeds, 1):
            d = tmp_path / f"round-{r}" / server
            d.mkdir(parents=True)
            (d / "load.json").write_text(json.dumps({"levels": [level(items, items / 10)]}))
    broken = tmp_path / "round-4" / "infinity-torch"
    broken.mkdir(parents=True)
    (broken / "load.json").write_text(json.dumps({"levels": [level(999, 1, ok=0)]}))  # ignored
    assert summary([str(tmp_path)]) == 0
    report = json.loads((tmp_path / "peers.json").read_text())
    speed = {r["server"]: (r["texts_per_s"], r["rounds"]) for r in report["rows"]}
    assert speed == {"polyclip-int8": (310, 3), "infinity-torch": (100, 3),
                     "infinity-optimum-int8": (105, 3),
                     "infinity-optimum-fp32": (72, 3)}  # fmt: skip
    assert report["ratios"] == [
        {"batch": 1, "concurrency": 16, "vs_best_infinity": 2.95, "met": False}
    ]
    assert "2.95× (missed)" in (tmp_path / "peers.md").read_text()
