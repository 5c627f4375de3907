"""Soak: many clients for a long time at a fixed offered rate, mixing embed, upsert and search.

Open loop: request i is due at ``start + i / rate`` whatever the server does, and its latency
counts from when it was due (a slow server cannot hide its queue by slowing the client down).
The requests go round-robin over ``clients`` connections. The server's resident memory, threads
and open files are sampled from its ``/metrics`` throughout: a leak shows as a trend. A 429 is
backpressure by design and is counted apart from errors.

Start-to-end differences mix one-offs (the collection's first segment and WAL files, thread
pools that start on first use, allocator arenas growing to the largest batch) with leaks, so
the report also gives the *steady state*: the least-squares slope of resident memory and the
thread range over the samples after a warm-up (the first ``WARMUP_SHARE`` of the run), and the
memory growth per point stored, since upserts grow the store by design.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import numpy as np
from tqdm.auto import tqdm

from polyclip.bench.client import (
    BenchError,
    error_kind,
    latency_summary,
    new_client,
    server_message,
    server_process,
    transport_error,
)

OPS = ("embed", "upsert", "search")
WARMUP_SHARE = 0.2


@dataclass(frozen=True)
class SoakConfig:
    url: str
    model: str  # embeds, and queries the collection
    index_model: str  # indexes the collection
    rate: float  # requests per second, offered
    duration_s: float = 600.0
    clients: int = 64
    mix: dict[str, float] = field(
        default_factory=lambda: {"embed": 0.5, "upsert": 0.2, "search": 0.3}
    )
    api_key: str | None = None
    timeout_s: float = 30.0
    sample_every_s: float = 10.0
    seed: int = 0
    # Upserts overwrite this many point ids in turn (0: every upsert adds a new point). A fixed
    # set keeps the collection's size constant, so a rising memory line is a leak, not data.
    upsert_ids: int = 0


def parse_mix(text: str) -> dict[str, float]:
    """``embed=0.6,search=0.4`` as a share per operation (argparse type; unknown ops refused)."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        op, _, weight = part.partition("=")
        try:
            value = float(weight)
        except ValueError:
            value = -1.0
        if op not in OPS or not value >= 0:
            raise argparse.ArgumentTypeError(
                f"--mix: expected OP=SHARE with OP in {', '.join(OPS)} and SHARE >= 0, got {part!r}"
            )
        mix[op] = value
    if not sum(mix.values()) > 0:
        raise argparse.ArgumentTypeError(f"--mix: no operation has a positive share: {text!r}")
    return mix


class _Tally:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, Counter[str]] = defaultdict(Counter)
        self.late = 0  # requests that could not even start on time (every connection busy)


async def _one(
    client: httpx.AsyncClient, cfg: SoakConfig, op: str, due: float, i: int, text: str,
    name: str, tally: _Tally,
) -> None:  # fmt: skip
    if op == "embed":
        call = client.post("/v1/embeddings", json={"model": cfg.model, "input": [text]})
    elif op == "upsert":
        point = i % cfg.upsert_ids if cfg.upsert_ids else str(uuid.uuid4())
        item = {"id": point, "text": text, "payload": {"text": text}}
        call = client.post(f"/collections/{name}/points", json={"items": [item]})
    else:
        body = {"query": {"text": text}, "model": cfg.model, "limit": 10}
        call = client.post(f"/collections/{name}/search", json=body)
    try:
        response = await call
    except httpx.TransportError as e:
        tally.statuses[op][error_kind(e)] += 1
        return
    tally.statuses[op][str(response.status_code)] += 1
    if response.status_code == 200:
        tally.latencies[op].append(time.perf_counter() - due)


async def run_soak(cfg: SoakConfig, texts: list[str]) -> dict[str, Any]:
    """Offer ``rate`` requests per second for ``duration_s``; returns the JSON-ready report."""
    if cfg.rate <= 0 or cfg.clients < 1 or cfg.upsert_ids < 0:
        raise BenchError("--rate must be > 0, --clients >= 1 and --upsert-ids >= 0")
    rng = random.Random(cfg.seed)
    ops, weights = zip(*((op, cfg.mix.get(op, 0.0)) for op in OPS), strict=True)
    name = f"bench-soak-{uuid.uuid4().hex[:8]}"
    tally, samples = _Tally(), []
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                new_client(cfg.url, api_key=cfg.api_key, connections=1, timeout=cfg.timeout_s)
            )
            for _ in range(cfg.clients)
        ]
        admin = clients[0]
        try:
            r = await admin.post("/collections", json={"name": name, "model": cfg.index_model})
        except httpx.TransportError as e:
            raise transport_error(cfg.url, e) from e
        if r.status_code != 201:
            raise BenchError(f"cannot create {name}: {server_message(r)}")
        seed_items = [{"text": t, "payload": {"text": t}} for t in texts[:64]]
        r = await admin.post(f"/collections/{name}/points", json={"items": seed_items})
        if r.status_code != 200:
            raise BenchError(f"cannot seed {name}: {server_message(r)}")
        busy = [asyncio.Lock() for _ in clients]
        start = time.perf_counter()
        total = int(cfg.rate * cfg.duration_s)
        tasks: list[asyncio.Task[None]] = []

        async def sample() -> None:
            while True:
                samples.append({"t_s": round(time.perf_counter() - start, 1),
                                **await server_process(admin)})  # fmt: skip
                await asyncio.sleep(cfg.sample_every_s)

        async def send(i: int, op: str, due: float) -> None:
            lock = busy[i % len(busy)]
            if lock.locked():
                tally.late += 1
            async with lock:
                await _one(clients[i % len(clients)], cfg, op, due, i, texts[i % len(texts)],
                           name, tally)  # fmt: skip

        sampler = asyncio.create_task(sample())
        progress = tqdm(total=total, desc="soak", unit="req", mininterval=5)
        for i in range(total):
            due = start + i / cfg.rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            op = rng.choices(ops, weights)[0]
            tasks.append(asyncio.create_task(send(i, op, due)))
            tasks = [t for t in tasks if not t.done()]
            progress.update()
            if samples and "rss_bytes" in samples[-1]:
                progress.set_postfix(rss_mib=round(samples[-1]["rss_bytes"] / 2**20), refresh=False)
        await asyncio.gather(*tasks)
        progress.close()
        elapsed = time.perf_counter() - start
        sampler.cancel()
        samples.append({"t_s": round(elapsed, 1), **await server_process(admin)})
        info = await admin.get(f"/collections/{name}")
        points = info.json().get("points_count") if info.status_code == 200 else None
        await admin.delete(f"/collections/{name}")
    per_op = {}
    stored = None if points is None else points - len(seed_items)  # what the upserts added
    for op in OPS:
        statuses = dict(sorted(tally.statuses[op].items()))
        sent = sum(statuses.values())
        errors = {k: v for k, v in statuses.items() if k not in ("200", "429")}
        per_op[op] = {
            "sent": sent,
            "ok": statuses.get("200", 0),
            "backpressure_429": statuses.get("429", 0),
            "errors": errors,
            "latency": latency_summary(tally.latencies[op]),
        }
    config = asdict(cfg)
    config["api_key"] = "***" if cfg.api_key else None
    return {
        "kind": "soak",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config,
        "elapsed_s": round(elapsed, 1),
        "offered_per_s": cfg.rate,
        "late_starts": tally.late,
        "collection_points": points,  # at the end, the 64 seed points included
        "ops": per_op,
        "errors_total": sum(sum(v["errors"].values()) for v in per_op.values()),
        "server": {
            "start": samples[0] if samples else {},
            "end": samples[-1] if samples else {},
            "samples": samples,
            "steady": steady_state(samples, elapsed * WARMUP_SHARE, stored),
        },
    }


def floor_trend(t_min: np.ndarray, mib: np.ndarray, window_min: float = 2.0) -> float | None:
    """Slope (MiB/min) of the lowest value in each ``window_min`` window: the heap trims
    (every minute by default) draw a sawtooth whose phase against the samples skews a plain fit;
    its floor is what the heap holds after a trim, and only a leak raises it. None with fewer
    than three whole windows."""
    starts = np.arange(t_min[0], t_min[-1] - window_min + 1e-9, window_min)
    if len(starts) < 3:
        return None
    lows = [mib[(t_min >= a) & (t_min < a + window_min)].min() for a in starts]
    return round(float(np.polyfit(starts, lows, 1)[0]), 2)


def steady_state(
    samples: list[dict[str, float]], warmup_s: float, stored: int | None
) -> dict[str, Any]:
    """Memory slope (MiB per minute) and thread range after the warm-up, and the slope over the
    second half of that window (growth that is levelling off has a smaller one than the whole;
    a leak keeps its rate), and the slope of the anonymous part where the server reports it
    (all samples, and the floor under the trims' sawtooth);
    MiB per 1,000 points stored over the whole run; MiB its malloc trims handed back. ``{}``
    with fewer than three samples after the warm-up."""
    after = [x for x in samples if x["t_s"] >= warmup_s and "rss_bytes" in x]
    if len(after) < 3:
        return {}
    t = np.array([x["t_s"] for x in after]) / 60
    rss = np.array([x["rss_bytes"] for x in after]) / 2**20
    slope = float(np.polyfit(t, rss, 1)[0])
    late = t >= (t[0] + t[-1]) / 2
    late_slope = float(np.polyfit(t[late], rss[late], 1)[0]) if late.sum() >= 3 else slope
    # The anonymous part alone (heaps, arenas): mapped files (the store's WAL and segments)
    # grow and shrink with the data and can be dropped by the kernel; a leak is anonymous.
    anon = np.array([x.get("rss_anon_bytes", np.nan) for x in after]) / 2**20
    anon_slope = floor_slope = None
    if not np.isnan(anon).any():
        anon_slope, floor_slope = round(float(np.polyfit(t, anon, 1)[0]), 2), floor_trend(t, anon)
    grown = (samples[-1].get("rss_bytes", 0) - samples[0].get("rss_bytes", 0)) / 2**20
    threads = [x["threads"] for x in after if "threads" in x]
    trimmed = [x["trimmed_bytes"] for x in samples if "trimmed_bytes" in x]
    return {
        "warmup_s": round(warmup_s, 1),
        "rss_start_mib": round(float(rss[0]), 1),
        "rss_end_mib": round(float(rss[-1]), 1),
        "rss_slope_mib_per_min": round(slope, 2),
        "rss_slope_second_half_mib_per_min": round(late_slope, 2),
        "rss_anon_slope_mib_per_min": anon_slope,
        "rss_anon_floor_slope_mib_per_min": floor_slope,
        "threads_min": min(threads, default=0),
        "threads_max": max(threads, default=0),
        "points_stored": stored,
        "rss_mib_per_1k_points": round(grown / stored * 1000, 1) if stored else None,
        "trimmed_mib": round((trimmed[-1] - trimmed[0]) / 2**20, 1) if trimmed else None,
    }
