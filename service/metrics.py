"""Prometheus metrics, named as TEI names them so its dashboards and alerts carry over.

TEI serves one model; polyclip serves several, so per-model series carry a ``model`` label.
Each app owns its registry: two apps in one process (tests, reloads) never collide.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKENS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_FRACTION = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """Every series the service exports; see the README's serving section for the list."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.request_count = Counter(
            "te_request_count", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.request_duration = Histogram(
            "te_request_duration",
            "HTTP request duration in seconds",
            ["route", "method", "status"],
            buckets=_SECONDS,
            registry=r,
        )
        self.queue_size = Gauge(
            "te_queue_size", "texts and images waiting for a batch", ["model"], registry=r
        )
        self.queue_capacity = Gauge(
            "te_queue_capacity", "inputs a model's queue holds before it answers 429", ["model"],
            registry=r,
        )  # fmt: skip
        self.ready = Gauge("te_ready", "1 while the server is ready (what /ready says)", registry=r)
        self.batch_size = Histogram(
            "te_batch_next_size",
            "inputs per forward pass",
            ["model", "modality"],
            buckets=_SIZES,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "te_batch_next_tokens",
            "padded tokens per text forward pass",
            ["model"],
            buckets=_TOKENS,
            registry=r,
        )
        self.tokenization_duration = Histogram(
            "te_request_tokenization_duration",
            "seconds spent counting tokens of queued texts",
            ["model"],
            buckets=_SECONDS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "te_batch_inference_duration",
            "seconds per forward pass",
            ["model", "modality"],
            buckets=_SECONDS,
            registry=r,
        )
        self.express_batches = Counter(
            "te_batch_express",
            "forward passes of small requests run beside a large batch (the express worker)",
            ["model"],
            registry=r,
        )
        self.queue_duration = Histogram(
            "te_request_queue_duration",
            "seconds an input waited before its batch started",
            ["model"],
            buckets=_SECONDS,
            registry=r,
        )
        self.store_duration = Histogram(
            "te_store_duration",
            "vector store operation duration in seconds",
            ["op", "status"],
            buckets=_SECONDS,
            registry=r,
        )
        self.shadow_overlap = Histogram(
            "te_shadow_overlap",
            "overlap@k between a search and its shadow model's search",
            ["collection", "model", "shadow"],
            buckets=_FRACTION,
            registry=r,
        )
        self.quarantined = Gauge(
            "te_store_quarantined_collections",
            "collections that failed to open at start and are not served",
            registry=r,
        )
        self.memory_trims = Counter(
            "te_process_memory_trims",
            "malloc_trim calls that handed freed heap pages back to the OS",
            registry=r,
        )
        self.memory_trimmed = Counter(
            "te_process_memory_trimmed_bytes",
            "anonymous resident memory the trims gave back (a leak is what stays after them)",
            registry=r,
        )
        ProcessCollector(registry=r)  # process_cpu_seconds_total, resident memory, open fds
        threads = Gauge(
            "te_process_threads", "OS threads of the process (model and store pools included)",
            registry=r,
        )  # fmt: skip
        threads.set_function(os_threads)
        resident = Gauge(
            "te_process_resident_memory_split_bytes",
            "resident memory by kind: anon (heaps and arenas, where a leak shows), file (mapped "
            "files: weights, the store's segments and WAL; the kernel can drop them), shmem",
            ["kind"], registry=r,
        )  # fmt: skip
        for kind, field in (("anon", "RssAnon"), ("file", "RssFile"), ("shmem", "RssShmem")):
            resident.labels(kind).set_function(lambda field=field: proc_status(field) or 0.0)

    def forget_collection(self, name: str) -> None:
        """Drop a dropped collection's series: labels must not outlive what they name."""
        for labels in list(self.shadow_overlap._metrics):  # prometheus-client has no filter
            if labels[0] == name:
                self.shadow_overlap.remove(*labels)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def os_threads() -> float:
    """Every thread of this process (``/proc``), not only Python's: onnxruntime's and the
    store's pools are where a leak would show."""
    return proc_status("Threads") or float(threading.active_count())


def proc_status(field: str) -> float | None:
    """One field of ``/proc/self/status`` as a number (``kB`` fields in bytes); None where
    there is no such file or field (not Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name == field:
                    value, *unit = rest.split()
                    return float(value) * (1024 if unit == ["kB"] else 1)
    except (OSError, ValueError):
        pass
    return None


class RequestMetrics:
    """ASGI middleware counting every HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            # The template (/collections/{name}), never the raw path, and only known methods
            # (uvicorn accepts any token as one): bounded label values.
            label = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            method = method if method in METHODS else "other"
            self.metrics.request_count.labels(label, method, str(status)).inc()
            self.metrics.request_duration.labels(label, method, str(status)).observe(
                time.perf_counter() - start
            )
