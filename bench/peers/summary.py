"""The peer table from ``run_peers.sh``'s rounds: per server and level, the median over rounds of
texts/s and p95, and polyclip int8's ratio to the faster infinity engine (target ≥ 3×).

    python -m polyclip.bench.peers.summary OUT_DIR     # reads OUT_DIR/round-*/SERVER/load.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from polyclip.encoders.report import new_figure, write_report

OURS = "polyclip-int8"
INFINITY = ("infinity-torch", "infinity-optimum-int8", "infinity-optimum-fp32")
TARGET = 3.0


def collect(out: Path) -> dict[str, dict[tuple[int, int], list[dict[str, Any]]]]:
    """server → (batch, concurrency) → the level of each round that ran it without errors."""
    runs: dict[str, dict[tuple[int, int], list[dict[str, Any]]]] = {}
    for report in sorted(out.glob("round-*/*/load.json")):
        server = report.parent.name
        for lv in json.loads(report.read_text(encoding="utf-8"))["levels"]:
            if lv["ok"] and lv["error_rate"] <= 0.01:
                runs.setdefault(server, {}).setdefault((lv["batch"], lv["concurrency"]), []).append(
                    lv
                )
    return runs


def summarise(out: Path) -> dict[str, Any]:
    runs = collect(out)
    rows = []
    for server, levels in runs.items():
        for (batch, conc), seen in sorted(levels.items()):
            rows.append({
                "server": server,
                "batch": batch,
                "concurrency": conc,
                "rounds": len(seen),
                "texts_per_s": round(statistics.median(lv["items_per_s"] for lv in seen), 1),
                "texts_per_s_range": [round(min(lv["items_per_s"] for lv in seen), 1),
                                      round(max(lv["items_per_s"] for lv in seen), 1)],
                "p95_ms": round(statistics.median(lv["latency"]["p95_ms"] for lv in seen), 1),
            })  # fmt: skip
    by = {(r["server"], r["batch"], r["concurrency"]): r for r in rows}
    ratios = []
    for (server, batch, conc), r in by.items():
        if server != OURS:
            continue
        peers = [by[(p, batch, conc)]["texts_per_s"] for p in INFINITY if (p, batch, conc) in by]
        if peers:
            ratio = r["texts_per_s"] / max(peers)
            ratios.append({"batch": batch, "concurrency": conc, "vs_best_infinity": round(ratio, 2),
                           "met": ratio >= TARGET})  # fmt: skip
    return {"kind": "peers", "rows": rows, "ratios": ratios, "target": TARGET}


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Peers: median over interleaved rounds (texts/s; p95 ms)",
        "",
        "| server | texts/request × clients | rounds | texts/s (median) | range | p95 ms |",
        "|---|---|---:|---:|---|---:|",
    ]
    for r in report["rows"]:
        lo, hi = r["texts_per_s_range"]
        cells = [r["server"], f"{r['batch']} × {r['concurrency']}", str(r["rounds"]),
                 f"{r['texts_per_s']:.0f}", f"{lo:.0f}–{hi:.0f}", f"{r['p95_ms']:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"polyclip int8 ÷ the faster infinity engine (target ≥ {report['target']}×):", ""]
    for q in report["ratios"]:
        verdict = "met" if q["met"] else "missed"
        lines.append(
            f"- {q['batch']} × {q['concurrency']}: {q['vs_best_infinity']:.2f}× ({verdict})"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any]) -> Figure:
    fig = new_figure(8, 4)
    ax = fig.subplots()
    levels = sorted({(r["batch"], r["concurrency"]) for r in report["rows"]})
    servers = list(dict.fromkeys(r["server"] for r in report["rows"]))
    width = 0.8 / max(1, len(servers))
    by = {(r["server"], r["batch"], r["concurrency"]): r["texts_per_s"] for r in report["rows"]}
    for k, server in enumerate(servers):
        xs = [i + (k - (len(servers) - 1) / 2) * width for i in range(len(levels))]
        ax.bar(xs, [by.get((server, b, c), 0) for b, c in levels], width, label=server)
    ax.set_xticks(range(len(levels)), [f"{b}×{c}" for b, c in levels])
    ax.set_xlabel("texts per request × clients")
    ax.set_ylabel("texts/s (median over rounds)")
    ax.legend(fontsize="x-small")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    report = summarise(out)
    text = markdown(report)
    write_report(out, "peers", report, text, {"peers": plot(report)})
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
