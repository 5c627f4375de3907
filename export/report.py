"""The speed table as files: JSON (everything), markdown (docs/PERFORMANCE.md) and a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from polyclip.encoders.report import new_figure, write_report


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 100_000 else f"{n / 1e3:.1f}K"


def _r1(row: dict[str, Any]) -> str:
    r1 = row["r1"]
    if not r1:
        return "–"
    per = " / ".join(f"{v:.1f}" for k, v in r1.items() if k != "mean")
    delta = row["r1_delta_vs_pytorch_fp32"]
    shift = f" (Δ {delta:+.1f})" if delta is not None and row["backend"] != "PyTorch fp32" else ""
    return f"{r1['mean']:.1f}{shift} [{per}]"


def markdown(report: dict[str, Any]) -> str:
    """A self-contained markdown section: context, the table, targets and notes."""
    m, cfg = report["machine"], report["config"]
    langs = "/".join(cfg["quality_langs"])
    lines = [
        f"Measured {report['date']} on {m['cpu']} ({m['usable_cores']} usable cores, "
        f"flags {', '.join(m['cpu_flags']) or 'none'}), GPU: {m['gpu'] or 'none'}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f"; torch threads {report['torch_threads']}.",
        f"Load average before/after: {report['load_average']['before'][0]:.2f} / "
        f"{report['load_average']['after'][0]:.2f} (other jobs share this machine).",
        f"Command: `{report['command']}`",
        "",
        f"Throughput: {report['timed_captions']['n']} Multi30k {cfg['split']} captions "
        f"({report['timed_captions']['lang']}), batch {cfg['batch_size']}, sorted by length, "
        f"median of {cfg['passes']} interleaved passes. Latency: batch 1, "
        f"{cfg['latency_n']} captions × {cfg['passes']} passes. R@1: queries in "
        f"{langs}, English documents, both from the row's model and backend "
        f"(mean [{langs}]; Δ against the same model in PyTorch fp32).",
        "",
        f"| model | backend | params (total / non-emb.) | sent/s @{cfg['batch_size']} "
        "| × teacher PyTorch fp32 | p50 ms | p95 ms | R@1 % |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        t = r["throughput"]
        lines.append(
            f"| {r['model']} | {r['backend']} | {_count(r['params_total'])} / "
            f"{_count(r['params_non_embedding'])} | {t['median']:.1f} "
            f"({t['min']:.0f}–{t['max']:.0f}) | {r['speedup_vs_teacher_pytorch_fp32']:.2f}× | "
            f"{r['latency_ms']['p50']:.1f} | {r['latency_ms']['p95']:.1f} | {_r1(r)} |"
        )
    lines += ["", *_target_lines(report.get("targets") or {})]
    lines += [f"- note: {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def _target_lines(targets: dict[str, Any]) -> list[str]:
    out = []
    t = targets.get("student_int8_vs_student_pytorch")
    if t:
        delta = "n/a" if t["r1_delta"] is None else f"{t['r1_delta']:+.1f}"
        out.append(
            f"- target student ONNX int8 ≥ 3× student PyTorch fp32 with |ΔR@1| ≤ 1: "
            f"{t['speedup']:.2f}×, ΔR@1 {delta} → {'met' if t['met'] else 'MISSED'}"
        )
    for backend, v in targets.get("student_vs_teacher_same_backend", {}).items():
        out.append(
            f"- target student ≥ 3× teacher on {backend}: {v['speedup']:.2f}× → "
            f"{'met' if v['met'] else 'MISSED'}"
        )
    return out


def chart(report: dict[str, Any]) -> Figure:
    """Horizontal bars of throughput per row, labelled with speed-up and mean R@1."""
    rows = report["rows"]
    fig = new_figure(8, 0.45 * len(rows) + 1.5)
    ax = fig.add_subplot()
    labels = [f"{r['model']} · {r['backend']}" for r in rows]
    values = [r["throughput"]["median"] for r in rows]
    colors = ["#4c72b0" if r["model"] == "teacher" else "#dd8452" for r in rows]
    ax.barh(labels, values, color=colors)
    ax.invert_yaxis()
    for i, r in enumerate(rows):
        r1 = f", R@1 {r['r1']['mean']:.1f}" if r["r1"] else ""
        ax.text(values[i], i, f" {r['speedup_vs_teacher_pytorch_fp32']:.2f}×{r1}", va="center")
    ax.set_xlabel(f"sentences/s at batch {report['config']['batch_size']} (median of passes)")
    ax.set_title(f"polyclip speed table — {report['machine']['cpu']}", fontsize=9)
    ax.set_xlim(0, max(values) * 1.35 if values else 1)
    return fig


def write(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """``speed.json``, ``speed.md`` and ``speed.png`` in ``out``."""
    return write_report(out, "speed", report, markdown(report), {"speed": chart(report)})
