"""A real uvicorn server on 127.0.0.1: many clients at once, restarts, and `polyclip serve`."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from polyclip.encoders.load import load_encoders
from polyclip.service.config import Settings
from polyclip.service.store_edge import EdgeStore
from tests.live import free_port, live_server, wait_queued, wait_ready
from tests.tiny import WORDS

ROOT = Path(__file__).resolve().parents[2]


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS[:40], k=rng.randint(1, 12))) for _ in range(n)]


def test_many_clients_at_once_every_answer_right(
    make_settings: Callable[..., Settings], model_dirs: dict
) -> None:
    """32 clients, 256 requests of 1-4 texts each, plus concurrent upserts: every embedding
    equals the encoder's own for that text (no mix-ups across shared batches), nothing lost."""
    texts = sentences(600, seed=1)
    student, _ = load_encoders(model_dirs["student-tiny"])
    want = dict(zip(texts, student.encode(texts, batch_size=64), strict=True))
    jobs = [texts[i : i + 1 + i % 4] for i in range(0, 256 * 2, 2)]

    async def embed(http: httpx.AsyncClient, batch: list[str]) -> None:
        r = await http.post("/embed/text", json={"model": "student", "texts": batch})
        assert r.status_code == 200, r.text
        got = np.asarray(r.json()["embeddings"])
        np.testing.assert_allclose(got, np.stack([want[t] for t in batch]), atol=1e-4)

    async def upsert(http: httpx.AsyncClient, k: int) -> None:
        items = [{"id": k * 10 + j, "text": t} for j, t in enumerate(texts[k * 5 : k * 5 + 5])]
        r = await http.post("/collections/load/points", json={"items": items})
        assert r.status_code == 200 and r.json()["count"] == 5, r.text

    async def client(base: str, mine: list, ups: list[int]) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            for batch in mine:
                await embed(http, batch)
            for k in ups:
                await upsert(http, k)

    async def main(base: str) -> None:
        async with httpx.AsyncClient(base_url=base) as http:
            r = await http.post("/collections", json={"name": "load", "model": "student"})
            assert r.status_code == 201
        await asyncio.gather(
            *(client(base, jobs[c::32], list(range(c, 64, 32))) for c in range(32))
        )
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/collections/load")).json()["points_count"] == 64 * 5
            metrics = (await http.get("/metrics")).text
        prefix = 'te_batch_next_size_count{modality="text",model="student-tiny"}'
        batches = next(float(x.split()[-1]) for x in metrics.splitlines() if x.startswith(prefix))
        assert batches < len(jobs) + 64  # clients shared forward passes

    with live_server(make_settings()) as base:
        asyncio.run(main(base))


def test_points_survive_a_restart(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    docs = [{"id": i, "text": t, "payload": {"i": i}} for i, t in enumerate(sentences(40, 2))]
    with live_server(settings) as base:
        assert (
            httpx.post(f"{base}/collections", json={"name": "keep", "model": "teacher"}).status_code
            == 201
        )
        assert (
            httpx.post(f"{base}/collections/keep/points", json={"items": docs}).status_code == 200
        )
        query = {"query": {"text": docs[7]["text"]}, "limit": 3}
        before = httpx.post(f"{base}/collections/keep/search", json=query).json()["results"]
    with live_server(settings) as base:  # a new app, a new store on the same data_dir
        info = httpx.get(f"{base}/collections/keep").json()
        assert info["points_count"] == 40 and info["spaces"][0]["model"] == "teacher"
        after = httpx.post(f"{base}/collections/keep/search", json=query).json()["results"]
    assert after == before and after[0]["id"] == 7


def _config(path: Path, model_dirs: dict, data_dir: Path) -> Path:
    lines = ["models:"]
    lines += [f"  {n}: {{path: '{p}'}}" for n, p in model_dirs.items() if n != "student-tiny"]
    lines += [f"  student-tiny: {{path: '{model_dirs['student-tiny']}', max_wait_ms: 1500}}"]
    lines += ["aliases: {teacher: clip-tiny, student: student-tiny}", f"data_dir: '{data_dir}'"]
    lines += ["demo: {collection: demo, model: teacher, lang: en, texts: [a dog, a cat, two men]}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.timeout(180)
def test_polyclip_serve_indexes_the_demo_and_drains_on_sigterm(
    model_dirs: dict, tmp_path: Path
) -> None:
    """`polyclip serve` as a process: the demo is indexed at startup, SIGTERM lets the request
    in flight finish, then the workers drain and the store is flushed and closed."""
    data = tmp_path / "q"
    config = _config(tmp_path / "models.yaml", model_dirs, data)
    port = free_port()
    cmd = [sys.executable, "-m", "polyclip", "serve", "--config", str(config), "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("w") as out:  # a file, not a pipe: a full pipe would block the server
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(base, timeout=120)
    except TimeoutError:
        proc.kill()
        raise AssertionError(log.read_text()[-3000:]) from None
    assert httpx.get(f"{base}/collections/demo").json()["points_count"] == 3
    items = {"items": [{"id": 10 + i, "text": t} for i, t in enumerate(sentences(20, 3))]}
    assert httpx.post(f"{base}/collections/demo/points", json=items).status_code == 200

    async def in_flight() -> httpx.Response:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            task = asyncio.create_task(
                http.post("/embed/text", json={"model": "student", "texts": ["x"]})
            )
            await wait_queued(http, "student-tiny", 1)  # held there for 1.5 s
            proc.send_signal(signal.SIGTERM)
            return await task

    assert asyncio.run(in_flight()).status_code == 200
    assert proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once done
    assert "Application shutdown complete" in log.read_text()
    store = EdgeStore(data)  # the directory lock was released
    assert store.count("demo") == 23
    store.close()


@pytest.mark.timeout(180)
def test_acknowledged_upserts_survive_sigkill_mid_storm(model_dirs: dict, tmp_path: Path) -> None:
    """A real `polyclip serve` under 4 clients upserting as fast as they can is killed with
    SIGKILL mid-storm (no drain, no flush, no close): after a restart every point whose upsert
    was acknowledged is there — the write-ahead log alone keeps them."""
    data = tmp_path / "q"
    config = _config(tmp_path / "models.yaml", model_dirs, data)
    port = free_port()
    cmd = [sys.executable, "-m", "polyclip", "serve", "--config", str(config), "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with (tmp_path / "serve.log").open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    acknowledged: list[int] = []

    async def writer(http: httpx.AsyncClient, c: int) -> None:
        for k in range(10_000):
            ids = [c * 1_000_000 + k * 8 + j for j in range(8)]
            items = [{"id": i, "text": f"a dog {i % 97}"} for i in ids]
            try:
                r = await http.post("/collections/storm/points", json={"items": items})
            except httpx.TransportError:
                return  # the server is gone
            if r.status_code == 200:
                acknowledged.extend(ids)

    async def storm() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            assert (await http.post("/collections", json={"name": "storm", "model": "teacher"})
                    ).status_code == 201  # fmt: skip
            tasks = [asyncio.create_task(writer(http, c)) for c in range(4)]
            while len(acknowledged) < 400:
                await asyncio.sleep(0.02)
            proc.kill()  # SIGKILL, mid-storm
            await asyncio.gather(*tasks)

    try:
        wait_ready(base, timeout=120)
        asyncio.run(storm())
    finally:
        proc.kill()
        proc.wait(30)
    store = EdgeStore(data)
    assert len(acknowledged) >= 400
    # Deleting by id counts the points that exist: every acknowledged one does.
    assert store.delete_points("storm", acknowledged, None) == len(acknowledged)
    store.close()
