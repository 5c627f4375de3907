"""HTTP plumbing shared by both benchmarks: the error type, clients, messages, percentiles."""

from __future__ import annotations

import resource
from collections.abc import Sequence

import httpx
import numpy as np

from polyclip.encoders.errors import EncoderError


class BenchError(EncoderError):
    """A failed benchmark run; ``polyclip`` prints the message on one line and exits 2."""


def new_client(
    url: str, *, api_key: str | None, connections: int, timeout: float
) -> httpx.AsyncClient:
    """An async client sized to the number of workers, so no request waits for a connection."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(
        base_url=url.rstrip("/"), headers=headers, limits=limits, timeout=timeout
    )


def server_message(response: httpx.Response) -> str:
    """The server's own explanation: polyclip's/OpenAI's ``error.message``, FastAPI's ``detail``."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            field = f" (field {err['field']})" if err.get("field") else ""
            return f"{err['message']}{field}"
        if "detail" in body:
            return str(body["detail"])[:200]
    return str(body)[:200]


def transport_error(url: str, exc: httpx.TransportError) -> BenchError:
    """A one-line reason for a request that never got an HTTP answer."""
    if isinstance(exc, httpx.ConnectError):
        return BenchError(f"cannot reach {url}: connection failed (is the server running?)")
    if isinstance(exc, httpx.TimeoutException):
        return BenchError(f"{url} did not answer in time ({type(exc).__name__})")
    return BenchError(f"request to {url} failed: {type(exc).__name__}: {exc}")


def error_kind(exc: httpx.TransportError) -> str:
    """How a failed request is counted next to HTTP statuses in the error table."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    return "transport"


def latency_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max/mean in milliseconds; ``None`` when nothing succeeded."""
    keys = ("p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms")
    if not seconds:
        return dict.fromkeys(keys)
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    values = (p50, p95, p99, ms.max(), ms.mean())
    return {k: round(float(v), 3) for k, v in zip(keys, values, strict=True)}


def cpu_seconds() -> float:
    """User + system CPU this process has used: the load client's own cost on shared cores."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def server_process(client: httpx.AsyncClient) -> dict[str, float]:
    """The server's own process figures from its ``/metrics`` (prometheus-client's process
    collector): CPU seconds, resident bytes (and their anonymous and file-backed parts),
    threads, open files, heap handed back by its trims; empty if it has none."""
    try:
        text = (await client.get("/metrics")).text
    except httpx.HTTPError:
        return {}
    wanted = {
        "process_cpu_seconds_total": "cpu_s",
        "process_resident_memory_bytes": "rss_bytes",
        "te_process_threads": "threads",
        "process_open_fds": "open_fds",
        'te_process_resident_memory_split_bytes{kind="anon"}': "rss_anon_bytes",
        'te_process_resident_memory_split_bytes{kind="file"}': "rss_file_bytes",
        "te_process_memory_trimmed_bytes_total": "trimmed_bytes",
    }
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            try:
                found[wanted[name]] = float(value)
            except ValueError:
                continue
    return found
