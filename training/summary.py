"""``polyclip train summary``: one table over many runs (a learning-rate grid, seeds, methods).

Each run directory holds ``metrics.jsonl`` and ``student/polyclip.json``; a row is the run's best
validation evaluation (the step its student was saved at), its retention against the base and
its cost (steps, wall time, parameters trained), so sweeps are compared on what was chosen on
validation, never on a test split. A student directory (e.g. ``RUN/wise-0.5`` from
``polyclip train wise``) is a row too, scored by the retention ``polyclip eval`` wrote in its card.

The **score** is the selection rule of docs/RESULTS.md: the mean of every retention mean in the
card — distilled and held-out languages of each data source (``train`` writes its validation
captions; ``eval`` adds more, e.g. gettext catalogues) — so a run is chosen on how much of its
base's multilinguality it keeps across languages and domains, not on in-domain R@1 alone.
``selected`` is the best score among runs whose English → English R@1 is at least 95. Runs that
differ only in their seed are also summarised together (``seeds``: mean and range).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from polyclip.encoders.errors import PolyclipError
from polyclip.encoders.report import fmt, new_figure, write_report
from polyclip.encoders.space import CARD_FILE

MIN_ENGLISH = 95.0  # en → en R@1 (%) a student needs before it may replace the teacher
SEED_KEYS = ("objective", "lr", "steps", "seeds", "runs")  # a seed group's identity, not figures


def run_row(run: Path) -> dict[str, Any]:
    """The best evaluation of one run, with its settings and cost."""
    model = run if (run / CARD_FILE).is_file() else run / "student"
    try:
        metrics = run / "metrics.jsonl"
        lines = [json.loads(x) for x in metrics.read_text().splitlines()] if run != model else []
        card = json.loads((model / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise PolyclipError(f"{run} is neither a finished run nor a student: {e}") from e
    prov = card.get("provenance", {})
    hp = prov.get("hyper_parameters", {})
    evals = [x for x in lines if x["type"] == "eval"]
    best_step = prov.get("steps", 0)
    best = next((x for x in evals if x["step"] == best_step), evals[-1] if evals else {})
    langs = hp.get("val_languages") or hp.get("languages") or []
    if run == model:  # a student made from a run (WiSE-FT): its own scores are in its card
        first = next(iter(card.get("retention", {}).values()), {}).get("languages", {})
        best = {f"{lang}_r@1": row["student"]["r@1"] for lang, row in first.items()}
        langs = list(first)
    sources = {name: _kept(table) for name, table in card.get("retention", {}).items()}
    terms = [v for kept in sources.values() for k, v in kept.items()
             if k in ("distilled", "held_out") and v is not None]  # fmt: skip
    english = [k["english_r@1"] for k in sources.values() if k.get("english_r@1") is not None]
    return {
        "run": run.name if run != model else f"{run.parent.name}/{run.name}",
        "objective": hp.get("loss"),
        "lr": hp.get("lr"),
        "seed": hp.get("seed"),
        "languages": hp.get("languages"),
        "best_step": best_step,
        "steps": prov.get("steps_trained"),
        "wall_time_s": prov.get("wall_time_s"),
        "val_r@1": best.get("val_r@1"),
        "r@1": {lang: best.get(f"{lang}_r@1") for lang in langs},
        "retention": sources,
        "en_r@1": english[0] if english else None,
        "score": round(float(np.mean(terms)), 4) if terms else None,
        "trained_params": prov.get("trained_params"),
    }


def _kept(table: dict[str, Any]) -> dict[str, Any]:
    """One retention source in brief: the means of each kind, the worst language, en → en."""
    values = [r["retention"] for r in table.get("languages", {}).values()]
    values = [v for v in values if v is not None]
    return {
        **table.get("mean", {}),
        "min": min(values) if values else None,
        "english_r@1": table.get("english", {}).get("r@1"),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    langs = sorted({lang for r in rows for lang in r["r@1"]})
    sources = list(dict.fromkeys(name for r in rows for name in r["retention"]))
    head = ["run", "objective", "lr", "seed", "best step / steps", "val R@1",
            *(f"{lang} R@1" for lang in langs),
            *(f"{name} retention distilled / held-out (min)" for name in sources),
            "en→en R@1", "score", "trained params", "wall s"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        kept = [_retention(r["retention"].get(name, {})) for name in sources]
        params = r["trained_params"]
        rate = "–" if r["lr"] is None else f"{r['lr']:g}"
        cells = [r["run"], str(r["objective"]), rate, str(r["seed"]),
                 f"{r['best_step']} / {r['steps']}", fmt(r["val_r@1"]),
                 *(fmt(r["r@1"].get(lang)) for lang in langs), *kept, fmt(r["en_r@1"]),
                 "–" if r["score"] is None else f"{r['score']:.3f}",
                 "–" if params is None else f"{params / 1e6:.2f}M",
                 f"{r['wall_time_s']:.0f}" if r["wall_time_s"] else "–"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def seed_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs that differ only in their seed (objective, rate, steps and languages equal), as
    mean and range, so a ranking between objectives is read against the spread between seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        key = (str(r["objective"]), r["lr"], r["steps"], tuple(r["languages"] or ()))
        groups.setdefault(key, []).append(r)
    out = []
    for (objective, lr, steps, _), runs in groups.items():
        if len({r["seed"] for r in runs}) < 2:
            continue
        figures = {"val_r@1": [r["val_r@1"] for r in runs], "score": [r["score"] for r in runs]}
        for name in dict.fromkeys(n for r in runs for n in r["retention"]):
            for kind in ("distilled", "held_out"):
                figures[f"{name} {kind}"] = [r["retention"].get(name, {}).get(kind) for r in runs]
        out.append({
            "objective": objective, "lr": lr, "steps": steps,
            "seeds": [r["seed"] for r in runs], "runs": [r["run"] for r in runs],
            **{k: _spread(v) for k, v in figures.items()},
        })  # fmt: skip
    return out


def _spread(values: list[float | None]) -> dict[str, float] | None:
    known = [v for v in values if v is not None]
    if len(known) < len(values) or not known:
        return None
    return {"mean": float(np.mean(known)), "min": min(known), "max": max(known)}


def seeds_markdown(groups: list[dict[str, Any]]) -> str:
    names = list(dict.fromkeys(k for g in groups for k in g if k not in SEED_KEYS))
    head = ["objective", "lr", "seeds", *(n.replace("val_r@1", "val R@1") for n in names)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        cells = [g["objective"], "–" if g["lr"] is None else f"{g['lr']:g}",
                 ", ".join(map(str, g["seeds"]))]  # fmt: skip
        for name in names:
            v = g.get(name)
            digits = 1 if name == "val_r@1" else 3  # the mean one digit finer than the runs
            cells.append("–" if v is None else f"{v['mean']:.{digits + 1}f} "
                         f"({v['min']:.{digits}f}–{v['max']:.{digits}f})")  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return (
        "\nSeeds (mean, min–max over runs that differ only in their seed):\n\n"
        + "\n".join(lines)
        + "\n"
    )


def _retention(kept: dict[str, Any]) -> str:
    cells = ["–" if kept.get(k) is None else f"{kept[k]:.3f}" for k in ("distilled", "held_out")]
    worst = kept.get("min")
    return " / ".join(cells) + ("" if worst is None else f" ({worst:.3f})")


def plot(rows: list[dict[str, Any]]) -> Figure:
    """A learning-rate grid: best val R@1 against the rate, one line per objective. Other run
    sets (methods at one budget): val R@1 and the retention score side by side, per run."""
    rates: dict[str, set[float]] = {}
    for r in rows:
        if r["lr"] is not None:
            rates.setdefault(str(r["objective"]), set()).add(r["lr"])
    fig = new_figure(6, 4 if rates and min(map(len, rates.values())) > 1 else 1 + 0.35 * len(rows))
    ax = fig.subplots()
    if rates and min(map(len, rates.values())) > 1:
        for objective in rates:
            mine = sorted((r for r in rows if str(r["objective"]) == objective and r["lr"]),
                          key=lambda r: r["lr"])  # fmt: skip
            ax.plot([r["lr"] for r in mine], [r["val_r@1"] or np.nan for r in mine], "o-",
                    label=objective)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel("best val R@1 (%)")
        ax.legend(fontsize="small")
    else:
        y = np.arange(len(rows))
        ax.barh(y - 0.2, [r["val_r@1"] or np.nan for r in rows], 0.4, label="val R@1 (%)")
        ax.barh(y + 0.2, [100 * r["score"] if r["score"] else np.nan for r in rows], 0.4,
                label="score: mean retention (%)")  # fmt: skip
        ax.set_yticks(y, [r["run"] for r in rows], fontsize="small")
        ax.invert_yaxis()
        ax.set_xlabel("%")
        # Above the axes: the bars run to ~100%, where a legend inside would cover them.
        fig.legend(loc="outside upper center", ncols=2, fontsize="small")
    ax.grid(True, alpha=0.3)
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
    seeds = seed_groups(rows)
    text = markdown(rows) + (seeds_markdown(seeds) if seeds else "")
    best: dict[str, dict[str, Any]] = {}
    for row in rows:  # per objective, the run with the best val R@1 (the selection rule)
        held = best.get(row["objective"])
        if row["val_r@1"] is not None and (held is None or row["val_r@1"] > held["val_r@1"]):
            best[row["objective"]] = row
    eligible = [r for r in rows if r["score"] is not None and (r["en_r@1"] or 0) >= MIN_ENGLISH]
    selected = max(eligible, key=lambda r: r["score"])["run"] if eligible else None
    data = {"runs": rows, "best": best, "selected": selected, "min_english_r@1": MIN_ENGLISH,
            "seeds": seeds}  # fmt: skip
    write_report(args.out, args.name, data, text, {args.name: plot(rows)})
    print(text, end="")
    if selected:
        print(f"selected (best score with en→en R@1 ≥ {MIN_ENGLISH}): {selected}")
    return 0
