"""``polyclip store bench``: what quantised collections cost and keep, on the embedded store.

Two parts, because recall needs real text and latency and memory need size:

- **Real corpus**: every English caption of the corpus (Multi30k: train, val and test, ~31k)
  embedded by the teacher, in a float, an int8 and a binary collection; queries are the
  student's embeddings of the val captions in each language. Recall@10 is measured against
  exact float search (numpy; a result as close as the 10th exact one counts, so ties do not
  matter), R@1 against each query's own English caption, per search setting (rescoring,
  oversampling).
- **Synthetic**: N random unit vectors of the teacher's dimension (1M by default) per
  quantisation, built in one child process and measured in a fresh one: build time (and the
  final optimisation's, and the longest the process could not run Python meanwhile: what a
  server would not answer for), disk, the resident memory it takes once open (anonymous and
  file-backed, per vector) and search p50/p95. A line formula extrapolates to 10M vectors.

Every collection is built through :class:`~polyclip.service.store_edge.EdgeStore` (the server's
own code path) and optimised before it is searched.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import shutil
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from polyclip.encoders.base import TextEncoder, l2_normalize
from polyclip.encoders.captions import read_parallel, texts_sha256
from polyclip.encoders.errors import PolyclipError
from polyclip.encoders.report import new_figure
from polyclip.service.metrics import proc_status
from polyclip.service.store import (
    QUANTIZATIONS,
    CollectionMeta,
    PointRecord,
    QuantizedSearch,
    SpaceIndex,
)
from polyclip.service.store_edge import EdgeStore

VECTOR = "v"
UPSERT_CHUNK = 2000
# Search settings per quantisation: (label, how the search uses the quantised vectors).
SETTINGS: dict[str, list[tuple[str, QuantizedSearch | None]]] = {
    "none": [("float HNSW", None)],
    "int8": [
        ("no rescoring", QuantizedSearch(rescore=False)),
        ("rescored", QuantizedSearch(rescore=True)),
    ],
    "binary": [
        ("no rescoring", QuantizedSearch(rescore=False)),
        ("rescored", QuantizedSearch(rescore=True)),
        ("rescored, oversampling 2", QuantizedSearch(rescore=True, oversampling=2.0)),
        ("rescored, oversampling 4", QuantizedSearch(rescore=True, oversampling=4.0)),
    ],
}
K = 10


@dataclass(frozen=True)
class StoreBenchConfig:
    teacher: str
    student: str
    data: Path
    work: Path
    langs: list[str] = field(default_factory=lambda: ["de", "fr", "cs"])
    splits: tuple[str, ...] = ("train", "val", "test_2016_flickr")
    query_split: str = "val"
    synthetic: int = 1_000_000  # 0: skip the synthetic part
    latency_queries: int = 500


class StallMeter:
    """The longest time this process's Python threads could not run: a thread sleeps 10 ms at
    a time and keeps its longest wake-up gap. A serving process answers nothing for that long
    (the embedded store keeps the GIL while it indexes)."""

    def __init__(self, tick_s: float = 0.01) -> None:
        self.tick_s = tick_s
        self.longest_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-meter", daemon=True)

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(self.tick_s):
            now = time.perf_counter()
            self.longest_s = max(self.longest_s, now - last - self.tick_s)
            last = now

    def __enter__(self) -> StallMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _build(
    store: EdgeStore, name: str, kind: str, vectors: Any, n: int, dim: int
) -> dict[str, float]:
    """Create, fill (``vectors(start, stop)`` gives rows) and optimise: seconds in all, in the
    final optimisation, and the longest the process stalled meanwhile."""
    meta = CollectionMeta(name, (SpaceIndex("bench", VECTOR, dim, "teacher"),), quantization=kind)
    start = time.perf_counter()
    with StallMeter() as stall:
        store.create(meta)
        for lo in tqdm(range(0, n, UPSERT_CHUNK), desc=f"upsert {name}", unit="chunk"):
            hi = min(n, lo + UPSERT_CHUNK)
            rows = vectors(lo, hi)
            store.upsert(
                name, [PointRecord(lo + i, {VECTOR: r.tolist()}, {}) for i, r in enumerate(rows)]
            )
        optimize_start = time.perf_counter()
        store.optimize(name)
    end = time.perf_counter()
    return {"build_s": round(end - start, 1), "optimize_s": round(end - optimize_start, 1),
            "stall_s": round(stall.longest_s, 1)}  # fmt: skip


def _search(store: EdgeStore, name: str, q: np.ndarray, how: QuantizedSearch | None) -> list[int]:
    return [int(h.id) for h in store.search(name, VECTOR, q.tolist(), K, None, how)]


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(1000 * s for s in seconds)
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3),
    }


# ---- real corpus -------------------------------------------------------------------------------
def _model_stamp(model: str) -> str:
    """Which weights a model folder holds now: its path and its files' sizes and times. A
    student retrained in place shares its space with the old one (and with the teacher), so
    the space alone would serve the old one's embeddings."""
    root = Path(model).resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return f"{root}|" + "|".join(
        f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files
    )


def _embed_cached(
    work: Path, name: str, model: str, encoder: TextEncoder, texts: list[str], prefix: str
) -> np.ndarray:
    """Embeddings of ``texts``, cached under a key of the model's files, prefix and texts."""
    path = work / f"{name}-{texts_sha256([_model_stamp(model), prefix, *texts])}.npy"
    if path.is_file():
        return np.load(path)
    rows = encoder.encode(texts, prefix=prefix, show_progress=True)
    work.mkdir(parents=True, exist_ok=True)
    np.save(path, rows)
    return rows


def real_corpus(cfg: StoreBenchConfig) -> dict[str, Any]:
    """Recall@10 vs exact float search and R@1, per quantisation and search setting."""
    from polyclip.encoders.load import load_text_encoder

    if cfg.query_split not in cfg.splits:
        raise PolyclipError(f"the query split {cfg.query_split} must be one of {cfg.splits}")
    english: list[str] = []
    gold_offset = 0
    for split in cfg.splits:
        if split == cfg.query_split:
            gold_offset = len(english)
        english += read_parallel(cfg.data, split, [])["en"]
    queries_text = read_parallel(cfg.data, cfg.query_split, cfg.langs)
    docs = _embed_cached(
        cfg.work, "docs-teacher", cfg.teacher, load_text_encoder(cfg.teacher), english, "passage"
    )
    student = load_text_encoder(cfg.student)
    queries = {
        lang: _embed_cached(
            cfg.work, f"queries-student-{lang}", cfg.student, student, queries_text[lang], "query"
        )
        for lang in cfg.langs
    }
    docs = l2_normalize(docs)  # the store scores cosines; so does the exact search here
    queries = {lang: l2_normalize(q) for lang, q in queries.items()}
    exact = {lang: np.argsort(-(q @ docs.T), axis=1)[:, :K] for lang, q in queries.items()}
    # The K-th best exact score: a found document at least this close counts (ties included).
    kth = {lang: np.sort(q @ docs.T, axis=1)[:, -K] for lang, q in queries.items()}
    rows = []
    for kind in QUANTIZATIONS:
        root = cfg.work / f"store-real-{kind}"
        shutil.rmtree(root, ignore_errors=True)
        store = EdgeStore(root, flush_interval_s=0)
        built = _build(store, kind, kind, lambda lo, hi: docs[lo:hi], len(docs), docs.shape[1])
        for label, how in SETTINGS[kind]:
            recall, r1, took = [], [], []
            for lang, q in queries.items():
                for i, row in enumerate(q):
                    t0 = time.perf_counter()
                    found = _search(store, kind, row, how)
                    took.append(time.perf_counter() - t0)
                    close = docs[found] @ row >= kth[lang][i] - 1e-5 if found else []
                    recall.append(float(np.sum(close)) / K)
                    r1.append(bool(found) and found[0] == gold_offset + i)
            rows.append({
                "quantization": kind,
                "setting": label,
                "recall@10": round(100 * float(np.mean(recall)), 2),
                "r@1": round(100 * float(np.mean(r1)), 2),
                **_percentiles(took),
                "build_s": built["build_s"],
            })  # fmt: skip
        store.close()
        shutil.rmtree(root, ignore_errors=True)
    exact_r1 = {
        lang: round(100 * float(np.mean(exact[lang][:, 0] == gold_offset + np.arange(len(q)))), 2)
        for lang, q in queries.items()
    }
    return {
        "documents": len(docs),
        "dimension": int(docs.shape[1]),
        "queries": {k: len(v) for k, v in queries.items()},
        "exact_r@1": exact_r1,
        "rows": rows,
    }


# ---- synthetic ---------------------------------------------------------------------------------
def _unit_rows(seed: int, lo: int, hi: int, dim: int) -> np.ndarray:
    """Rows lo..hi of a reproducible random unit-vector corpus (each chunk from its own seed)."""
    x = np.random.default_rng([seed, lo]).normal(size=(hi - lo, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _memory() -> dict[str, int]:
    """This process's resident memory, anonymous and file-backed (bytes)."""
    return {k: int(proc_status(k) or 0) for k in ("VmRSS", "RssAnon", "RssFile")}


def _child_build(root: str, kind: str, n: int, dim: int, result: Any) -> None:
    store = EdgeStore(root, flush_interval_s=0)
    built = _build(store, kind, kind, lambda lo, hi: _unit_rows(0, lo, hi, dim), n, dim)
    store.close()
    result.put(built)


def _child_measure(root: str, kind: str, dim: int, queries: int, result: Any) -> None:
    before = _memory()
    store = EdgeStore(root, flush_interval_s=0)
    q = _unit_rows(1, 0, queries, dim)
    for row in q[: min(100, queries)]:  # warm-up: what a serving process holds after a while
        _search(store, kind, row, SETTINGS[kind][-1][1])
    latency = {}
    for label, how in SETTINGS[kind]:
        took = []
        for row in q:
            t0 = time.perf_counter()
            _search(store, kind, row, how)
            took.append(time.perf_counter() - t0)
        latency[label] = _percentiles(took)
    after = _memory()
    store.close()
    result.put({"memory": {k: after[k] - before.get(k, 0) for k in after}, "latency": latency})


def _in_child(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    result = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, result))
    proc.start()
    while True:  # a child that dies (an exception, the OOM killer) must not hang the parent
        try:
            out = result.get(timeout=5)
            break
        except queue.Empty:
            if not proc.is_alive():
                raise PolyclipError(
                    f"store bench child {target.__name__} died (exit code {proc.exitcode})"
                ) from None
    proc.join()
    return out


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def synthetic(cfg: StoreBenchConfig, dim: int) -> dict[str, Any]:
    n = cfg.synthetic
    rows = []
    for kind in QUANTIZATIONS:
        root = cfg.work / f"store-synthetic-{kind}-{n}"
        shutil.rmtree(root, ignore_errors=True)
        built = _in_child(_child_build, str(root), kind, n, dim)
        measured = _in_child(_child_measure, str(root), kind, dim, cfg.latency_queries)
        mem = measured["memory"]
        rows.append({
            "quantization": kind,
            "vectors": n,
            **built,
            "disk_bytes_per_vector": round(_disk_bytes(root) / n, 1),
            "rss_anon_bytes_per_vector": round(mem.get("RssAnon", 0) / n, 1),
            "rss_file_bytes_per_vector": round(mem.get("RssFile", 0) / n, 1),
            "latency": measured["latency"],
        })  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
    for r in rows:  # linear in N: what 10M vectors take
        r["ram_gb_at_10m"] = round(
            (r["rss_anon_bytes_per_vector"] + r["rss_file_bytes_per_vector"]) * 1e7 / 2**30, 1
        )
        r["disk_gb_at_10m"] = round(r["disk_bytes_per_vector"] * 1e7 / 2**30, 1)
    return {"vectors": n, "dimension": dim, "rows": rows}


def run_store_bench(cfg: StoreBenchConfig) -> dict[str, Any]:
    real = real_corpus(cfg)
    out: dict[str, Any] = {"kind": "store", "real": real}
    if cfg.synthetic:
        out["synthetic"] = synthetic(cfg, real["dimension"])
    return out


def markdown(report: dict[str, Any]) -> str:
    real = report["real"]
    lines = [
        f"# Quantised collections (embedded Qdrant Edge, {real['dimension']}-d)",
        "",
        f"## Real corpus: {real['documents']} English captions (teacher), queries: student on "
        f"{', '.join(f'{k} ({v})' for k, v in real['queries'].items())}",
        "",
        f"Exact float search R@1: {real['exact_r@1']}.",
        "",
        "| quantization | search | Recall@10 vs exact | R@1 | p50 ms | p95 ms | build s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in real["rows"]:
        cells = [r["quantization"], r["setting"], f"{r['recall@10']:.1f}", f"{r['r@1']:.1f}",
                 f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}", f"{r['build_s']:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    syn = report.get("synthetic")
    if syn:
        lines += [
            "",
            f"## Synthetic: {syn['vectors']:,} random unit vectors, {syn['dimension']}-d",
            "",
            "| quantization | build s | optimise s | longest stall s | disk B/vector | "
            "RAM anon B/vector | RAM file B/vector | RAM at 10M (GB) | disk at 10M (GB) | search "
            "| p50 ms | p95 ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
        ]
        for r in syn["rows"]:
            sizes = ("disk_bytes_per_vector", "rss_anon_bytes_per_vector",
                     "rss_file_bytes_per_vector")  # fmt: skip
            first = [r["quantization"], f"{r['build_s']:.0f}", f"{r['optimize_s']:.0f}",
                     f"{r['stall_s']:.1f}", *(f"{r[k]:.0f}" for k in sizes),
                     str(r["ram_gb_at_10m"]), str(r["disk_gb_at_10m"])]  # fmt: skip
            for k, (label, lat) in enumerate(r["latency"].items()):
                cells = (first if k == 0 else [""] * len(first)) + [
                    label, f"{lat['p50_ms']:.2f}", f"{lat['p95_ms']:.2f}"
                ]  # fmt: skip
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any]) -> Figure:
    fig = new_figure(7, 3.8)
    ax = fig.subplots()
    rows = report["real"]["rows"]
    labels = [f"{r['quantization']}\n{r['setting']}" for r in rows]
    ax.bar(range(len(rows)), [r["recall@10"] for r in rows], color="tab:blue")
    ax.set_xticks(range(len(rows)), labels, fontsize="x-small", rotation=30, ha="right")
    ax.set_ylabel("Recall@10 vs exact float (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, axis="y", alpha=0.3)
    return fig
