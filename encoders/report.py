"""Every measurement is written the same way: the JSON a tool reads, the markdown a person reads
and the PNG charts a document shows, side by side in one folder.

Figures are drawn on matplotlib's object API with an Agg canvas: no pyplot, so no global backend
switch at import and no figure state shared between reports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from polyclip.encoders.errors import PolyclipError

DPI = 120


def fmt(value: float | None, digits: int = 1) -> str:
    """A table cell: the number at ``digits`` decimals, or an en dash where there is none."""
    return "–" if value is None else f"{value:.{digits}f}"


def new_figure(width: float, height: float) -> Figure:
    """A figure in the one house style (constrained layout, Agg canvas, small legends)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def write_report(
    out_dir: str | Path,
    stem: str,
    data: Mapping[str, Any],
    markdown: str,
    figures: Mapping[str, Figure],
) -> dict[str, Path]:
    """Write ``{stem}.json``, ``{stem}.md`` and ``{name}.png`` per figure; return the paths."""
    out = Path(out_dir)
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md"}
    paths |= {name: out / f"{name}.png" for name in figures}
    try:
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        paths["json"].write_text(text, encoding="utf-8")
        paths["md"].write_text(markdown, encoding="utf-8")
        for name, fig in figures.items():
            fig.savefig(paths[name], dpi=DPI)
    except OSError as e:
        raise PolyclipError(f"cannot write the report to {out}: {e}") from e
    return paths
