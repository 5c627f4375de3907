"""``polyclip export efficiency``: how close the server comes to the model's own speed.

Wall-clock throughput over HTTP on a small machine mixes the model with the load client and the
machine's noise. CPU time does not: ``bench load`` records the server process's CPU-seconds per
1,000 texts at each level (from its ``/metrics``), and this command spends the same bundle's
CPU on the same texts in-process, at the batch size the server could form at best
(min(texts per request × clients, 32)), with the same onnxruntime settings (both read them from
``bundle.json``). **Serving efficiency = in-process CPU per text ÷ server CPU per text**; 1.0
means the HTTP path, validation, batching and JSON cost nothing beyond the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from polyclip.encoders.base import TextEncoder
from polyclip.encoders.captions import texts_sha256
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.onnx_bundle import OnnxTextEncoder, read_bundle
from polyclip.encoders.report import new_figure

MAX_BATCH = 32  # the in-process batch the service's default batching reaches at best
# Targets of the serving path (docs/PERFORMANCE.md): (texts per request, clients) → efficiency.
TARGETS = {(1, 16): 0.85, (32, 16): 0.95}


@dataclass(frozen=True)
class EfficiencyConfig:
    bundle: Path
    texts: list[str]
    load: dict[str, Any]  # a `polyclip bench load` report (load.json)
    min_texts: int = 2000  # texts encoded per in-process measurement (after a warm-up)


def inprocess_cpu(encoder: TextEncoder, texts: list[str], batch: int, n: int) -> dict[str, float]:
    """CPU-seconds per 1,000 texts (all threads of this process) and texts/s, encoding ``n``
    texts in batches of ``batch``, cycling through ``texts`` as the load client does."""
    cursor = 0

    def take() -> list[str]:
        nonlocal cursor
        chunk = [texts[(cursor + k) % len(texts)] for k in range(batch)]
        cursor = (cursor + batch) % len(texts)
        return chunk

    for _ in range(2):  # warm-up: sessions, arenas, tokenizer caches
        encoder.encode(take(), batch_size=batch)
    done, cpu0, t0 = 0, time.process_time(), time.perf_counter()
    while done < n:
        encoder.encode(take(), batch_size=batch)
        done += batch
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    return {"cpu_s_per_1k": round(1000 * cpu / done, 4), "texts_per_s": round(done / wall, 1)}


def run_efficiency(cfg: EfficiencyConfig) -> dict[str, Any]:
    """One row per level of the load report that has the server's CPU."""
    if cfg.load.get("kind") != "load":
        raise EncoderError("--load must be a `polyclip bench load` report (load.json)")
    sent = cfg.load.get("texts", {})
    if sent.get("sha256") not in (None, texts_sha256(cfg.texts)):
        raise EncoderError(
            f"--texts are not the texts the load run sent ({sent.get('count')} texts from "
            f"{sent.get('file') or 'the built-in set'}): pass the same file"
        )
    levels = [lv for lv in cfg.load["levels"] if lv.get("server_cpu_s_per_1k_items")]
    if not levels:
        raise EncoderError("the load report has no server CPU (does /metrics export process_*?)")
    encoder = OnnxTextEncoder(cfg.bundle)
    measured: dict[int, dict[str, float]] = {}
    rows = []
    for lv in levels:
        batch = min(lv["batch"] * lv["concurrency"], MAX_BATCH)
        if batch not in measured:
            measured[batch] = inprocess_cpu(encoder, cfg.texts, batch, cfg.min_texts)
        inproc = measured[batch]
        server = lv["server_cpu_s_per_1k_items"]
        target = TARGETS.get((lv["batch"], lv["concurrency"]))
        efficiency = round(inproc["cpu_s_per_1k"] / server, 3)
        rows.append({
            "batch": lv["batch"],
            "concurrency": lv["concurrency"],
            "server_cpu_s_per_1k": server,
            "server_texts_per_s": lv["items_per_s"],
            "inprocess_batch": batch,
            "inprocess_cpu_s_per_1k": inproc["cpu_s_per_1k"],
            "inprocess_texts_per_s": inproc["texts_per_s"],
            "efficiency": efficiency,
            "target": target,
            "met": None if target is None else efficiency >= target,
        })  # fmt: skip
    meta = read_bundle(cfg.bundle)
    return {
        "kind": "efficiency",
        "bundle": str(cfg.bundle),
        "precision": meta.get("precision"),
        "runtime": meta.get("runtime", {}),
        "load_started_at": cfg.load.get("started_at"),
        "model": cfg.load["config"].get("model"),
        "texts": {"count": len(cfg.texts), "sha256": texts_sha256(cfg.texts)},
        "rows": rows,
    }


def markdown(report: dict[str, Any]) -> str:
    head = (
        f"# Serving efficiency: {report['bundle']} ({report['precision']}), "
        f"runtime {report['runtime']}\n\n"
        "| texts/request × clients | server CPU-s / 1k texts | in-process (batch) CPU-s / 1k "
        "| efficiency | target | server texts/s | in-process texts/s |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in report["rows"]:
        target = "–"
        if r["target"] is not None:
            target = f"≥ {r['target']} " + ("met" if r["met"] else "missed")
        lines.append(
            f"| {r['batch']} × {r['concurrency']} | {r['server_cpu_s_per_1k']:.3f} | "
            f"{r['inprocess_cpu_s_per_1k']:.3f} ({r['inprocess_batch']}) | "
            f"{r['efficiency']:.2f} | {target} | {r['server_texts_per_s']:.0f} | "
            f"{r['inprocess_texts_per_s']:.0f} |"
        )
    return head + "\n".join(lines) + "\n"


def plot(report: dict[str, Any]) -> Figure:
    fig = new_figure(6, 3.5)
    ax = fig.subplots()
    labels = [f"{r['batch']}×{r['concurrency']}" for r in report["rows"]]
    ax.bar(labels, [r["efficiency"] for r in report["rows"]], color="tab:blue")
    for k, r in enumerate(report["rows"]):
        if r["target"] is not None:
            ax.hlines(r["target"], k - 0.4, k + 0.4, colors="tab:red")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("texts per request × clients")
    ax.set_ylabel("in-process ÷ server CPU per text")
    ax.set_title(f"serving efficiency ({report['precision']}); red: targets", fontsize="medium")
    return fig
