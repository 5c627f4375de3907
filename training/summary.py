"""``polyclip train summary``: one table over many runs (a learning-rate grid, seeds, methods).

Each run directory holds ``metrics.jsonl`` and ``student/polyclip.json``; a row is the run's best
validation evaluation (the step its student was saved at), its retention against the base and
its cost (steps, wall time, parameters trained), so sweeps are compared on what was chosen on
validation, never on a test split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from polyclip.encoders.errors import PolyclipError
from polyclip.encoders.report import new_figure, write_report


def run_row(run: Path) -> dict[str, Any]:
    """The best evaluation of one run, with its settings and cost."""
    try:
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        card = json.loads((run / "student" / "polyclip.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise PolyclipError(f"{run} is not a finished run (metrics.jsonl, student/): {e}") from e
    prov = card.get("provenance", {})
    hp = prov.get("hyper_parameters", {})
    evals = [x for x in lines if x["type"] == "eval"]
    best_step = prov.get("steps", 0)
    best = next((x for x in evals if x["step"] == best_step), evals[-1] if evals else {})
    langs = hp.get("val_languages") or hp.get("languages") or []
    retention = next(iter(card.get("retention", {}).values()), {})
    return {
        "run": run.name,
        "objective": hp.get("loss"),
        "lr": hp.get("lr"),
        "seed": hp.get("seed"),
        "languages": hp.get("languages"),
        "best_step": best_step,
        "steps": prov.get("steps_trained"),
        "wall_time_s": prov.get("wall_time_s"),
        "val_r@1": best.get("val_r@1"),
        "r@1": {lang: best.get(f"{lang}_r@1") for lang in langs},
        "retention": {
            lang: row["retention"] for lang, row in retention.get("languages", {}).items()
        },
        "retention_mean": retention.get("mean", {}),
        "trained_params": prov.get("trained_params"),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    langs = sorted({lang for r in rows for lang in r["r@1"]})
    head = ["run", "objective", "lr", "seed", "best step / steps", "val R@1",
            *(f"{lang} R@1" for lang in langs), "retention distilled / held-out",
            "wall s"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        mean = r["retention_mean"]
        kept = " / ".join("–" if mean.get(k) is None else f"{mean[k]:.3f}"
                          for k in ("distilled", "held_out"))  # fmt: skip
        cells = [r["run"], str(r["objective"]), f"{r['lr']:g}", str(r["seed"]),
                 f"{r['best_step']} / {r['steps']}", _pct(r["val_r@1"]),
                 *(_pct(r["r@1"].get(lang)) for lang in langs), kept,
                 f"{r['wall_time_s']:.0f}" if r["wall_time_s"] else "–"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def plot(rows: list[dict[str, Any]]) -> Figure:
    """Best val R@1 against learning rate, one line per objective."""
    fig = new_figure(6, 4)
    ax = fig.subplots()
    for objective in dict.fromkeys(r["objective"] for r in rows):
        mine = sorted((r for r in rows if r["objective"] == objective), key=lambda r: r["lr"])
        ax.plot([r["lr"] for r in mine], [r["val_r@1"] or np.nan for r in mine], "o-",
                label=objective)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("best val R@1 (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "summary",
        help="one table over several runs: best val R@1, retention, cost",
        description="Read each RUN's metrics.jsonl and student card; write summary.json, "
        "summary.md and summary.png to --out.",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--name", default="summary", help="file stem (default summary)")
    p.set_defaults(func=cmd_summary)


def cmd_summary(args: argparse.Namespace) -> int:
    rows = [run_row(run) for run in args.runs]
    text = markdown(rows)
    best: dict[str, dict[str, Any]] = {}
    for row in rows:  # per objective, the run with the best val R@1 (the selection rule)
        held = best.get(row["objective"])
        if row["val_r@1"] is not None and (held is None or row["val_r@1"] > held["val_r@1"]):
            best[row["objective"]] = row
    data = {"runs": rows, "best": best}
    write_report(args.out, args.name, data, text, {args.name: plot(rows)})
    print(text, end="")
    return 0
