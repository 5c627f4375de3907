"""Retrieval quality through the API: index English with one model, query in X with others.

This is the question a team switching from teacher to student asks: the index the teacher built
stays, only the query model changes. Documents are the English side of a line-aligned corpus
(payload ``{"row": i, "lang": "en"}``); query ``i`` in language X has document ``i`` as its one
gold answer. Ranks come from the search results' payloads, so only the top 10 are seen: a gold
row outside them counts as rank 10, a miss for R@1/5/10 and 0 for MRR@10.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import numpy as np

from polyclip.bench.client import (
    BenchError,
    latency_summary,
    new_client,
    server_message,
    transport_error,
)
from polyclip.encoders.metrics import ranking_metrics

TOP_K = 10
UPSERT_BATCH = 64
METRIC_KEYS = ("r@1", "r@5", "r@10", "mrr@10")


@dataclass(frozen=True)
class QualityConfig:
    """Where the data is, which models index and query, and the server to ask."""

    url: str
    data_dir: str
    split: str
    langs: list[str]
    index_model: str = "teacher"
    query_models: list[str] = field(default_factory=lambda: ["student"])
    limit: int | None = None
    collection: str | None = None
    keep: bool = False
    concurrency: int = 1
    api_key: str | None = None
    timeout_s: float = 60.0


async def _call(
    client: httpx.AsyncClient, method: str, path: str, body: dict | None = None
) -> dict[str, Any]:
    """One API call; anything but 2xx becomes a one-line :class:`BenchError`."""
    try:
        response = await client.request(method, path, json=body)
    except httpx.TransportError as e:
        raise transport_error(f"{client.base_url}{path}", e) from e
    if response.status_code >= 300:
        msg = server_message(response)
        raise BenchError(f"{method} {path} answered {response.status_code}: {msg}")
    return response.json() if response.content else {}


async def _fill(client: httpx.AsyncClient, cfg: QualityConfig, name: str, docs: list[str]) -> None:
    """Upsert the documents in batches well under the server's per-request item limit."""
    for start in range(0, len(docs), UPSERT_BATCH):
        items = [
            {"id": i, "text": docs[i], "payload": {"row": i, "lang": "en"}}
            for i in range(start, min(start + UPSERT_BATCH, len(docs)))
        ]
        body = {"model": cfg.index_model, "items": items}
        out = await _call(client, "POST", f"/collections/{name}/points", body)
        ids = out.get("ids") or []
        if len(ids) != len(items):
            raise BenchError(f"upsert into {name} returned {len(ids)} ids for {len(items)} items")


async def _search_all(
    client: httpx.AsyncClient, cfg: QualityConfig, name: str, model: str, queries: list[str]
) -> tuple[np.ndarray, list[float]]:
    """Gold ranks and latencies for every query, ``cfg.concurrency`` searches in flight."""
    ranks = np.full(len(queries), TOP_K, dtype=np.int64)
    latencies: list[float] = []
    todo = iter(range(len(queries)))
    path = f"/collections/{name}/search"

    async def worker() -> None:
        for i in todo:
            body = {"query": {"text": queries[i]}, "model": model, "limit": TOP_K}
            t0 = time.perf_counter()
            out = await _call(client, "POST", path, body)
            latencies.append(time.perf_counter() - t0)
            rows = [(r.get("payload") or {}).get("row") for r in out.get("results", [])]
            if i in rows:
                ranks[i] = rows.index(i)

    await asyncio.gather(*(worker() for _ in range(cfg.concurrency)))
    return ranks, latencies


def _mean(per_lang: dict[str, dict[str, Any]]) -> dict[str, float]:
    return {k: round(float(np.mean([m[k] for m in per_lang.values()])), 3) for k in METRIC_KEYS}


async def run_quality(cfg: QualityConfig, texts: dict[str, list[str]]) -> dict[str, Any]:
    """Index ``texts["en"]``, search in every language with every query model, score."""
    name = cfg.collection or f"bench-quality-{uuid.uuid4().hex[:8]}"
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results: dict[str, Any] = {}
    async with new_client(
        cfg.url, api_key=cfg.api_key, connections=cfg.concurrency + 1, timeout=cfg.timeout_s
    ) as client:
        models = await _models(client, cfg)
        t0 = time.perf_counter()
        # Created before the try: a collection that already existed is never deleted by us.
        await _call(client, "POST", "/collections", {"name": name, "model": cfg.index_model})
        try:
            await _fill(client, cfg, name, texts["en"])
            index_s = time.perf_counter() - t0
            for model in cfg.query_models:
                per_lang: dict[str, dict[str, Any]] = {}
                for lang in cfg.langs:
                    ranks, lat = await _search_all(client, cfg, name, model, texts[lang])
                    metrics = {k: round(v, 3) for k, v in ranking_metrics(ranks).items()}
                    per_lang[lang] = {**metrics, "queries": len(ranks), **latency_summary(lat)}
                results[model] = {"langs": per_lang, "mean": _mean(per_lang)}
        finally:
            if not cfg.keep:
                await _delete_quietly(client, name)
    config = asdict(cfg)
    config["api_key"] = "***" if cfg.api_key else None
    return {
        "kind": "quality",
        "started_at": started,
        "config": config,
        "collection": name,
        "documents": len(texts["en"]),
        "index_s": round(index_s, 3),
        "server_models": models,
        "results": results,
    }


async def _models(client: httpx.AsyncClient, cfg: QualityConfig) -> list[dict[str, Any]]:
    """The server's model list (kept in the report as provenance), checked before indexing:
    a query model outside the index model's space would only fail after the whole index."""
    models = (await _call(client, "GET", "/v1/models")).get("data") or []
    spaces = {m.get("id"): m.get("space") for m in models}
    for ref in [cfg.index_model, *cfg.query_models]:
        if ref not in spaces:
            raise BenchError(f"the server has no model {ref!r}; it serves {sorted(spaces)}")
    want = spaces[cfg.index_model]
    for ref in cfg.query_models:
        if spaces[ref] != want:
            raise BenchError(
                f"query model {ref!r} embeds into space {spaces[ref]!r} but index model "
                f"{cfg.index_model!r} into {want!r}: it cannot search that index"
            )
    return models


async def _delete_quietly(client: httpx.AsyncClient, name: str) -> None:
    """Remove the run's collection; a failure here must not hide the run's own error."""
    with contextlib.suppress(httpx.HTTPError):
        await client.delete(f"/collections/{name}")
