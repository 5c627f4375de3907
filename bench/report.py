"""Load and quality reports (``load.*``, ``quality.*``), written by the shared report helper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from polyclip.encoders.report import fmt, new_figure
from polyclip.encoders.report import write_report as write_files


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{k}×{v}" for k, v in errors.items()) or "0"


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``{kind}.json``, ``{kind}.md`` and ``{kind}.png`` into ``out_dir``; return paths."""
    kind = report["kind"]
    if kind == "load":
        markdown, fig = load_markdown(report), plot_load(report)
    elif kind == "soak":
        markdown, fig = soak_markdown(report), plot_soak(report)
    elif kind == "types":
        markdown, fig = types_markdown(report), plot_types(report)
    else:
        markdown, fig = quality_markdown(report), plot_quality(report)
    return write_files(out_dir, kind, report, markdown, {kind: fig})


# ---- load ---------------------------------------------------------------------------------
def load_markdown(report: dict[str, Any]) -> str:
    """One row per (batch, concurrency) level, latencies in ms."""
    cfg = report["config"]
    lines = [
        f"# Load: `{cfg['model']}` at {cfg['url']} ({cfg['endpoint']} endpoint)",
        "",
        f"Started {report['started_at']}; {cfg['texts']} distinct texts; warm-up "
        f"{cfg['warmup']} request(s) per worker per level, excluded; limits: "
        f"{cfg['requests'] or '∞'} requests, {cfg['duration_s'] or '–'} s per level.",
        "",
        "| batch | concurrency | requests | ok | req/s | items/s | p50 ms | p95 ms | p99 ms "
        "| max ms | errors | client CPU s | client CPU s / 1k req | server CPU s / 1k items |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for lv in report["levels"]:
        lat = lv["latency"]
        lines.append(
            f"| {lv['batch']} | {lv['concurrency']} | {lv['requests']} | {lv['ok']} "
            f"| {fmt(lv['requests_per_s'])} | {fmt(lv['items_per_s'])} "
            f"| {fmt(lat['p50_ms'])} | {fmt(lat['p95_ms'])} | {fmt(lat['p99_ms'])} "
            f"| {fmt(lat['max_ms'])} | {_errors(lv['errors'])} | {fmt(lv['client_cpu_s'], 2)} "
            f"| {fmt(lv['client_cpu_s_per_1k_requests'], 2)} "
            f"| {fmt(lv.get('server_cpu_s_per_1k_items'), 2)} |"
        )
    lines += [
        "",
        f"The load client itself used {report['client_cpu_s_total']:.2f} CPU-seconds in all; "
        "when it runs on the server's machine, that time was taken from the server.",
        "",
    ]
    return "\n".join(lines)


def plot_load(report: dict[str, Any]) -> Figure:
    """Latency (p50 solid, p95 dashed) and items/s against concurrency, one colour per batch."""
    fig = new_figure(11, 4.2)
    ax_lat, ax_tp = fig.subplots(1, 2)
    batches = sorted({lv["batch"] for lv in report["levels"]})
    ticks = sorted({lv["concurrency"] for lv in report["levels"]})
    for i, batch in enumerate(batches):
        rows = [lv for lv in report["levels"] if lv["batch"] == batch]
        rows.sort(key=lambda lv: lv["concurrency"])
        conc = [lv["concurrency"] for lv in rows]
        p50 = [lv["latency"]["p50_ms"] or np.nan for lv in rows]
        p95 = [lv["latency"]["p95_ms"] or np.nan for lv in rows]
        colour = f"C{i}"
        ax_lat.plot(conc, p50, "o-", color=colour, label=f"batch {batch} p50")
        ax_lat.plot(conc, p95, "s--", color=colour, alpha=0.7, label=f"batch {batch} p95")
        tput = [lv["items_per_s"] for lv in rows]
        ax_tp.plot(conc, tput, "o-", color=colour, label=f"batch {batch}")
    for ax, title, ylabel in (
        (ax_lat, "Latency vs concurrency", "latency (ms)"),
        (ax_tp, "Throughput vs concurrency", "items / s"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    cfg = report["config"]
    fig.suptitle(f"{cfg['model']} @ {cfg['url']} ({cfg['endpoint']})", fontsize=10)
    return fig


def load_summary(report: dict[str, Any]) -> str:
    """A few lines for the terminal: the best throughput and each level's p50/p95."""
    lines = []
    for lv in report["levels"]:
        lat = lv["latency"]
        lines.append(
            f"batch {lv['batch']:>3} × {lv['concurrency']:>3} clients: "
            f"{lv['requests_per_s']:8.1f} req/s {lv['items_per_s']:9.1f} items/s  "
            f"p50 {fmt(lat['p50_ms']):>7} ms  p95 {fmt(lat['p95_ms']):>7} ms  "
            f"errors {_errors(lv['errors'])}"
        )
    lines.append(f"client CPU: {report['client_cpu_s_total']:.2f} s")
    return "\n".join(lines)


# ---- quality ------------------------------------------------------------------------------
def quality_markdown(report: dict[str, Any]) -> str:
    """Per query model: R@1/5/10 and MRR@10 per language, their mean, and search latency."""
    cfg = report["config"]
    lines = [
        f"# Retrieval quality: index `{cfg['index_model']}`, split `{cfg['split']}`",
        "",
        f"Server {cfg['url']}; {report['documents']} English documents indexed in "
        f"{report['index_s']:.1f} s; top-10 search per query; R@k in %, a gold row outside the "
        "top 10 counts as a miss.",
        "",
        "| query model | lang | queries | R@1 | R@5 | R@10 | MRR@10 | p50 ms | p95 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, res in report["results"].items():
        for lang, m in res["langs"].items():
            lines.append(
                f"| {model} | {lang} | {m['queries']} | {m['r@1']:.1f} | {m['r@5']:.1f} "
                f"| {m['r@10']:.1f} | {m['mrr@10']:.3f} | {fmt(m['p50_ms'])} "
                f"| {fmt(m['p95_ms'])} |"
            )
        mean = res["mean"]
        lines.append(
            f"| **{model}** | **mean** | | **{mean['r@1']:.1f}** | **{mean['r@5']:.1f}** "
            f"| **{mean['r@10']:.1f}** | **{mean['mrr@10']:.3f}** | | |"
        )
    lines.append("")
    return "\n".join(lines)


def plot_quality(report: dict[str, Any]) -> Figure:
    """Grouped bars: R@1 per language (and mean), one bar per query model."""
    models = list(report["results"])
    langs = [*report["config"]["langs"], "mean"]
    fig = new_figure(max(5.0, 1.3 * len(langs) * max(1, len(models))), 4)
    ax = fig.subplots()
    width = 0.8 / max(1, len(models))
    x = np.arange(len(langs))
    for i, model in enumerate(models):
        res = report["results"][model]
        vals = [res["langs"][lang]["r@1"] for lang in langs[:-1]] + [res["mean"]["r@1"]]
        bars = ax.bar(x + (i - (len(models) - 1) / 2) * width, vals, width, label=model)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(x, langs)
    ax.set_ylim(0, 110)
    ax.set_ylabel("R@1 (%)")
    ax.set_title(
        f"R@1 by query language — index built by {report['config']['index_model']}", fontsize=10
    )
    ax.legend(title="query model", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def quality_summary(report: dict[str, Any]) -> str:
    """One line per query model: per-language R@1 and the mean R@1/MRR@10."""
    lines = []
    for model, res in report["results"].items():
        per_lang = "  ".join(f"{lang} {m['r@1']:.1f}" for lang, m in res["langs"].items())
        mean = res["mean"]
        lines.append(
            f"{model:>12}: R@1 {per_lang}  | mean R@1 {mean['r@1']:.1f} "
            f"R@10 {mean['r@10']:.1f} MRR@10 {mean['mrr@10']:.3f}"
        )
    return "\n".join(lines)


# ---- soak ---------------------------------------------------------------------------------
def soak_markdown(report: dict[str, Any]) -> str:
    """Per operation: sent, ok, 429s, errors, latency; the server's memory and threads."""
    cfg, start, end = report["config"], report["server"]["start"], report["server"]["end"]
    lines = [
        f"# Soak: {cfg['clients']} clients, {report['offered_per_s']} requests/s offered for "
        f"{report['elapsed_s']:.0f} s at {cfg['url']}",
        "",
        f"Mix {cfg['mix']}; latency from when each request was due (open loop); "
        f"{report['late_starts']} requests found every connection busy at their due time.",
        "",
        "| op | sent | ok | 429 (backpressure) | errors | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for op, r in report["ops"].items():
        lat = r["latency"]
        lines.append(
            f"| {op} | {r['sent']} | {r['ok']} | {r['backpressure_429']} | {_errors(r['errors'])} "
            f"| {fmt(lat['p50_ms'])} | {fmt(lat['p95_ms'])} | {fmt(lat['p99_ms'])} |"
        )
    mib = 2**20
    lines += [
        "",
        f"Server resident memory {start.get('rss_bytes', 0) / mib:.0f} → "
        f"{end.get('rss_bytes', 0) / mib:.0f} MiB, threads {start.get('threads', 0):.0f} → "
        f"{end.get('threads', 0):.0f}, open files {start.get('open_fds', 0):.0f} → "
        f"{end.get('open_fds', 0):.0f}; errors in all: {report['errors_total']}.",
        "",
    ]
    steady = report["server"].get("steady")
    if steady:
        stored, per_point = steady["points_stored"], steady["rss_mib_per_1k_points"]
        anon = steady.get("rss_anon_slope_mib_per_min")
        floor = steady.get("rss_anon_floor_slope_mib_per_min")
        lines += [
            f"After the warm-up (the first {steady['warmup_s']:.0f} s): resident memory "
            f"{steady['rss_start_mib']:.0f} → {steady['rss_end_mib']:.0f} MiB, slope "
            f"{steady['rss_slope_mib_per_min']:+.2f} MiB/min (second half "
            f"{steady['rss_slope_second_half_mib_per_min']:+.2f}"
            + ("" if anon is None else f"; anonymous memory {anon:+.2f}")
            + ("" if floor is None else f", its floor after the trims {floor:+.2f}")
            + "); threads "
            f"{steady['threads_min']:.0f}–{steady['threads_max']:.0f}."
            + ("" if stored is None else f" Upserts added {stored} points")
            + ("" if per_point is None else f" ({per_point:.1f} MiB per 1,000 over the run)")
            + ("" if stored is None else ".")
            + (
                ""
                if steady.get("trimmed_mib") is None
                else f" The server's malloc trims handed back {steady['trimmed_mib']:.0f} MiB."
            ),
            "",
        ]
    return "\n".join(lines)


def plot_soak(report: dict[str, Any]) -> Figure:
    """The server's resident memory and threads over the run: flat lines mean no leak."""
    fig = new_figure(9, 3.6)
    ax_mem, ax_thr = fig.subplots(1, 2)
    samples = report["server"]["samples"]
    t = [x["t_s"] for x in samples]
    for key, label in (("rss_bytes", "all"), ("rss_anon_bytes", "anonymous"),
                       ("rss_file_bytes", "file-backed")):  # fmt: skip
        if any(key in x for x in samples):
            ax_mem.plot(t, [x.get(key, np.nan) / 2**20 for x in samples], "o-", ms=3, label=label)
    ax_mem.legend(fontsize=8)
    ax_thr.plot(t, [x.get("threads", np.nan) for x in samples], "o-", color="C1")
    for ax, title in ((ax_mem, "resident memory (MiB)"), (ax_thr, "OS threads")):
        ax.set_xlabel("seconds")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
    return fig


def soak_summary(report: dict[str, Any]) -> str:
    cells = [f"{op}: {r['ok']}/{r['sent']} ok, p95 {fmt(r['latency']['p95_ms'])} ms"
             for op, r in report["ops"].items()]  # fmt: skip
    return "; ".join(cells) + f"; errors {report['errors_total']}"


# ---- output types -------------------------------------------------------------------------
TYPE_SETTINGS = ("queries_quantised", "queries_quantised_rescored", "both_quantised",
                 "both_quantised_rescored")  # fmt: skip


def types_markdown(report: dict[str, Any]) -> str:
    """Mean R@1 over the query languages per type and setting, and bytes per text."""
    cfg = report["config"]
    langs = [lang for lang in cfg["data"] if lang != "en"]
    lines = [
        f"# Output types: `{cfg['query_model']}` queries ({', '.join(langs)}) against "
        f"`{cfg['index_model']}` documents ({cfg['data']['en']} English texts), exact search",
        "",
        f"Rescoring: the top {report['rescore_candidates']} candidates re-ranked by float query "
        "· float documents. R@1 in %, mean over the query languages.",
        "",
        "| type | bytes per vector | JSON bytes/text | base64 bytes/text | quantised queries "
        "| + rescore | both quantised | + rescore |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        m = r["mean_r@1"]
        lines.append(
            f"| {r['type']} | {r['dimension_bytes']} | {r['json_bytes_per_text']:.0f} | "
            f"{r['base64_bytes_per_text']:.0f} | "
            + " | ".join(fmt(m[s]) for s in TYPE_SETTINGS)
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot_types(report: dict[str, Any]) -> Figure:
    fig = new_figure(7, 3.8)
    ax = fig.subplots()
    rows = report["rows"]
    width = 0.8 / len(TYPE_SETTINGS)
    for k, setting in enumerate(TYPE_SETTINGS):
        xs = [i + (k - 1.5) * width for i in range(len(rows))]
        values = [r["mean_r@1"][setting] or 0 for r in rows]  # not scored: no bar
        ax.bar(xs, values, width, label=setting.replace("_", " "))
    ax.set_xticks(range(len(rows)), [r["type"] for r in rows])
    ax.set_ylabel("R@1 (%)")
    ax.legend(fontsize="small", loc="lower left")
    ax.grid(True, axis="y", alpha=0.3)
    return fig
