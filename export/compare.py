"""``polyclip export compare``: several bundles of one model side by side, to choose one to ship.

Per bundle: how it was converted (int8 method, MatMuls left in fp32, SmoothQuant scales), what
its parity gate measured (min and mean cosine against PyTorch, ΔR@1 on val when exported with
``--val-data``) and its speed on the same captions: passes interleave the bundles, rotating
their order, so machine noise lands on all of them alike; throughput is the median.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from polyclip.encoders.captions import read_parallel
from polyclip.encoders.onnx_bundle import OnnxTextEncoder, read_bundle
from polyclip.encoders.report import new_figure
from polyclip.export.parity import THRESHOLDS


def compare_bundles(
    bundles: list[Path], data: Path, split: str, lang: str, captions: int, passes: int, batch: int
) -> dict[str, Any]:
    texts = read_parallel(data, split, [lang], captions)[lang]
    encoders = {str(b): OnnxTextEncoder(b) for b in bundles}
    for enc in encoders.values():  # warm-up
        enc.encode(texts[:batch], batch_size=batch)
    speed: dict[str, list[float]] = {k: [] for k in encoders}
    names = list(encoders)
    for p in range(passes):
        for name in names[p % len(names) :] + names[: p % len(names)]:
            t0 = time.perf_counter()
            encoders[name].encode(texts, batch_size=batch)
            speed[name].append(len(texts) / (time.perf_counter() - t0))
    rows = []
    for name in names:
        meta = read_bundle(Path(name))
        parity = meta.get("parity", {})
        text = parity.get("text", {})
        rows.append({
            "bundle": name,
            "precision": meta.get("precision"),
            "conversion": meta["towers"]["text"].get("conversion", {}),
            "min_cosine": text.get("min"),
            "mean_cosine": text.get("mean"),
            "mean_delta_r1": text.get("r1", {}).get("mean_delta"),
            "gate": THRESHOLDS[meta["precision"]],  # the standard gate, whatever it was run at
            "passes": text.get("min") is not None and text["min"] >= THRESHOLDS[meta["precision"]],
            "captions_per_s": round(statistics.median(speed[name]), 1),
        })  # fmt: skip
    return {
        "kind": "compare", "data": str(data), "split": split, "lang": lang,
        "captions": len(texts), "passes": passes, "batch_size": batch, "rows": rows,
    }  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Bundles compared: {report['captions']} {report['lang']} {report['split']} captions, "
        f"batch {report['batch_size']}, median of {report['passes']} interleaved passes",
        "",
        "| bundle | precision | int8 method | int8 / fp32 MatMuls | smoothed | min cosine "
        "| mean cosine | gate | ΔR@1 | captions/s |",
        "|---|---|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in report["rows"]:
        c = r["conversion"]
        matmuls = f"{c['int8_matmuls']} / {c['fp32_matmuls']}" if "int8_matmuls" in c else "–"
        method = c.get("method", "–") + (f" ({c['calibration']})" if "calibration" in c else "")
        cells = [
            Path(r["bundle"]).name, str(r["precision"]), method, matmuls,
            str(c.get("smoothed", "–")), _num(r["min_cosine"], 4), _num(r["mean_cosine"], 4),
            f"≥ {r['gate']}: " + ("passes" if r["passes"] else "fails"),
            _num(r["mean_delta_r1"], 2, signed=True), f"{r['captions_per_s']:.0f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _num(value: float | None, digits: int, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def plot(report: dict[str, Any]) -> Figure:
    """Speed against the gate's min cosine, one point per bundle."""
    fig = new_figure(6, 4)
    ax = fig.subplots()
    for r in report["rows"]:
        if r["min_cosine"] is None:
            continue
        ax.scatter(r["captions_per_s"], r["min_cosine"])
        ax.annotate(Path(r["bundle"]).name, (r["captions_per_s"], r["min_cosine"]),
                    fontsize="x-small")  # fmt: skip
    gates = {r["gate"] for r in report["rows"] if r["gate"]}
    for gate in gates:
        ax.axhline(gate, color="tab:red", linewidth=0.8)
    ax.set_xlabel("captions/s")
    ax.set_ylabel("min cosine vs PyTorch (parity probes)")
    ax.grid(True, alpha=0.3)
    return fig
