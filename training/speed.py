"""Training-step speed: fp32 vs bf16 autocast, random vs length-grouped batches, side by side.

Both settings leave the objective alone and only change how fast a step runs, so whether to use
them is a measured ratio on the machine at hand. The configurations take turns step by step
(a noisy machine slows them alike) on the same student, data and batch size; each step is the
student's forward, an FD-style MSE to fixed targets, backward and an AdamW update, as in training.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from polyclip.encoders.report import new_figure, write_report
from polyclip.encoders.sentence import SentenceEncoder
from polyclip.training.data import BatchStream, read_pairs, token_lengths
from polyclip.training.runtime import cpu_has_bf16


@dataclass
class StepSpeedConfig:
    student: str
    data: str
    split: str = "train"
    languages: tuple[str, ...] = ("de", "fr", "cs")
    batch_size: int = 64
    steps: int = 10  # measured steps per configuration, after one warm-up step each
    limit: int = 0  # first N pairs per language (0 = all)
    max_seq_length: int = 128
    seed: int = 0


CONFIGS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]


def measure_steps(cfg: StepSpeedConfig) -> dict[str, Any]:
    """Median seconds per optimizer step for each (precision, grouping); ratios vs fp32 random."""
    pairs, _ = read_pairs(cfg.data, cfg.split, list(cfg.languages), limit=cfg.limit)
    student = SentenceEncoder.new_student(
        cfg.student, dimension=256, space="speed", teacher="speed", pooling="mean",
        head="linear", prefixes={}, max_seq_length=cfg.max_seq_length, name="speed", device="cpu",
    )  # fmt: skip
    model = student.model.train()
    model.backbone.get_input_embeddings().weight.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    texts = [p.text for p in pairs]
    lengths = np.minimum(token_lengths(texts, student.tokenizer), cfg.max_seq_length)
    streams = {c: BatchStream(len(texts), cfg.batch_size, cfg.seed, lengths if c[1] else None)
               for c in CONFIGS}  # fmt: skip
    times: dict[tuple[str, bool], list[float]] = {c: [] for c in CONFIGS}
    padded: dict[tuple[str, bool], list[int]] = {c: [] for c in CONFIGS}
    for step in tqdm(range(cfg.steps + 1), desc="train steps", unit="round"):
        for c in CONFIGS:
            batch = student.tokenize([texts[i] for i in streams[c].next()])
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=c[0] == "bf16"):
                z = model(**batch).float()
            torch.nn.functional.mse_loss(z, torch.zeros_like(z)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step:  # the first round warms the kernels up
                times[c].append(time.perf_counter() - t0)
                padded[c].append(int(batch["input_ids"].numel()))
    base = statistics.median(times[CONFIGS[0]])
    rows = []
    for c in CONFIGS:
        median = statistics.median(times[c])
        rows.append({
            "precision": c[0], "group_by_length": c[1], "s_per_step": round(median, 4),
            "pairs_per_s": round(cfg.batch_size / median, 1),
            "tokens_per_step": round(float(np.mean(padded[c])), 1),
            "speedup": round(base / median, 2),
        })  # fmt: skip
    return {
        "kind": "train_step",
        "config": {**cfg.__dict__, "languages": list(cfg.languages), "pairs": len(texts)},
        "real_tokens_per_pair": round(float(lengths.mean()), 2),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_bf16": cpu_has_bf16(),
        "rows": rows,
    }


def step_markdown(report: dict[str, Any]) -> str:
    """One row per (precision, grouping): step time, throughput, padding, speed-up."""
    cfg = report["config"]
    lines = [
        f"# Training-step speed: `{Path(cfg['student']).name}`, batch {cfg['batch_size']}",
        "",
        f"{cfg['pairs']} pairs ({', '.join(cfg['languages'])}) of `{cfg['split']}`, "
        f"{report['real_tokens_per_pair']} real tokens per text; median of {cfg['steps']} steps; "
        f"torch {report['torch']}, {report['threads']} thread(s), native CPU bf16: "
        f"{report['cpu_bf16']}.",
        "",
        "| precision | length-grouped | s/step | pairs/s | padded tokens/step | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['precision']} | {'yes' if r['group_by_length'] else 'no'} | {r['s_per_step']} "
            f"| {r['pairs_per_s']} | {r['tokens_per_step']:.0f} | {r['speedup']}× |"
        )
    return "\n".join(lines) + "\n"


def plot_train_step(report: dict[str, Any]) -> Figure:
    """Bars: pairs/s per (precision, grouping), labelled with the speed-up over fp32 random."""
    rows = report["rows"]
    labels = [f"{r['precision']}\n{'grouped' if r['group_by_length'] else 'random'}" for r in rows]
    fig = new_figure(5.5, 3.6)
    ax = fig.subplots()
    bars = ax.bar(labels, [r["pairs_per_s"] for r in rows], color="tab:blue")
    ax.bar_label(bars, labels=[f"{r['speedup']}×" for r in rows], fontsize=8)
    ax.set_ylabel("training pairs/s")
    ax.set_title(f"Student training step, batch {report['config']['batch_size']}", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def write_step_report(report: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """``train_step.json``, ``.md`` and ``.png`` in ``out``; the markdown is printed too."""
    markdown = step_markdown(report)
    print(markdown)
    return write_report(
        out, "train_step", report, markdown, {"train_step": plot_train_step(report)}
    )
