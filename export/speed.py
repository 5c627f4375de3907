"""The speed table (paper table 1): teacher vs student × backend, measured in one run.

Rows are PyTorch fp32, ONNX fp32 and ONNX int8 on the CPU, plus PyTorch fp16, ONNX CUDA fp16
and TensorRT fp16 when a GPU is present (skipped with a note otherwise — never estimated). Every
row is measured in every pass and the row order rotates between passes, so machine noise (other
jobs on shared cores) lands on all rows alike; throughput is the median over passes. Each row
carries R@1 on the validation captions, so speed and quality are read together.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polyclip.encoders.base import TextEncoder
from polyclip.encoders.captions import read_parallel
from polyclip.encoders.dual import DualTextEncoder
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.load import load_text_encoder
from polyclip.encoders.onnx_bundle import (
    CUDA,
    TRT,
    OnnxTextEncoder,
    RuntimeOptions,
    is_bundle_dir,
    read_bundle,
)
from polyclip.encoders.sentence import SentenceEncoder
from polyclip.export.bundle import ExportOptions, export_bundle, versions
from polyclip.export.parity import r1_by_lang
from polyclip.export.quantize import Precision

log = logging.getLogger(__name__)

TARGET_SPEEDUP = 3.0
TARGET_R1_POINTS = 1.0
BASELINE = ("teacher", "PyTorch fp32")
_CUDA_ONLY = RuntimeOptions(tensorrt=False)
_TRT_FP16 = RuntimeOptions(trt_fp16=True)  # an fp32 bundle; TensorRT builds an fp16 engine


@dataclass
class BenchConfig:
    """What to measure; the defaults are the full table (Multi30k val, German captions timed)."""

    teacher: str
    student: str
    data_dir: Path
    out: Path
    work: Path | None = None  # bundle cache; default OUT/bundles
    split: str = "val"
    lang: str = "de"  # the captions that are timed
    quality_langs: tuple[str, ...] = ("de", "fr", "cs")
    quality_limit: int | None = None
    n: int = 1000  # captions per throughput pass
    latency_n: int = 200  # single-caption requests per latency pass
    passes: int = 3
    batch_size: int = 32
    threads: int = 0  # 0: each runtime's default
    gpu: bool = True  # add the GPU rows when a GPU is present


@dataclass
class Row:
    """One model on one backend, and everything measured for it."""

    role: str
    backend: str
    device: str
    load: Callable[[], TextEncoder]
    encoder: TextEncoder | None = None
    throughput: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    r1: dict[str, float] = field(default_factory=dict)


def count_params(encoder: TextEncoder) -> tuple[int, int]:
    """Total and non-embedding parameters of a PyTorch text encoder (its text tower only)."""
    if isinstance(encoder, SentenceEncoder):
        modules: list[nn.Module] = [encoder.model]
    elif isinstance(encoder, DualTextEncoder):
        model = encoder.dual.model
        modules = [m for m in (model.text_model, getattr(model, "text_projection", None)) if m]
    else:
        raise EncoderError(f"cannot count parameters of {type(encoder).__name__}")
    total = sum(p.numel() for m in modules for p in m.parameters())
    emb = sum(
        p.numel()
        for m in modules
        for sub in m.modules()
        if isinstance(sub, nn.Embedding)
        for p in sub.parameters()
    )
    return total, total - emb


def machine() -> dict[str, Any]:
    """CPU model, cores, load and library versions: the context every figure needs."""
    cpu = platform.processor() or "unknown"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"}),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(),
    }


def _bundle(cfg: BenchConfig, source: str, role: str, precision: Precision) -> Path:
    """An exported text bundle of ``source``, reused from the cache when its source matches."""
    path = (cfg.work or cfg.out / "bundles") / f"{role}-{precision}"
    if is_bundle_dir(path) and read_bundle(path)["source"]["path"] == str(Path(source).resolve()):
        return path
    device = "cuda" if precision == "fp16" and torch.cuda.is_available() else "cpu"
    export_bundle(source, path, ExportOptions(precision, towers=["text"], device=device))
    return path


def _torch_fp16(source: str) -> TextEncoder:
    enc = load_text_encoder(source, device="cuda")
    (enc.model if isinstance(enc, SentenceEncoder) else enc.dual.model).half()  # type: ignore[attr-defined]
    return enc


def build_rows(cfg: BenchConfig, notes: list[str]) -> list[Row]:
    """Every row this machine can run; what it cannot run is explained in ``notes``."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    gpu = cfg.gpu and torch.cuda.is_available()
    if cfg.gpu and not gpu:
        notes.append(
            "no CUDA GPU on this machine: the PyTorch fp16, ONNX CUDA fp16 and TensorRT fp16 "
            "rows are skipped (not estimated)"
        )
    for provider in (CUDA, TRT) if gpu else ():
        if provider not in available:
            notes.append(f"onnxruntime here has no {provider} ({available}): its row is skipped")
    cpu = RuntimeOptions(intra_op_threads=cfg.threads)
    rows: list[Row] = []
    for role, src in (("teacher", cfg.teacher), ("student", cfg.student)):

        def onnx(
            precision: Precision, device: str = "cpu", rt: RuntimeOptions = cpu, s=src, r=role
        ) -> Callable[[], TextEncoder]:
            return lambda: OnnxTextEncoder(_bundle(cfg, s, r, precision), device=device, runtime=rt)

        rows += [
            Row(role, "PyTorch fp32", "cpu", lambda s=src: load_text_encoder(s)),
            Row(role, "ONNX fp32", "cpu", onnx("fp32")),
            Row(role, "ONNX int8", "cpu", onnx("int8")),
        ]
        if gpu:
            rows.append(Row(role, "PyTorch fp16", "cuda", lambda s=src: _torch_fp16(s)))
        if gpu and CUDA in available:
            rows.append(Row(role, "ONNX CUDA fp16", "cuda", onnx("fp16", "cuda", _CUDA_ONLY)))
        if gpu and TRT in available:
            rows.append(Row(role, "TensorRT fp16", "cuda", onnx("fp32", "cuda", _TRT_FP16)))
    return rows


def _check_provider(row: Row) -> None:
    """A GPU row that onnxruntime quietly put on the CPU would be a lie in the table."""
    if isinstance(row.encoder, OnnxTextEncoder) and row.device != "cpu":
        runs = row.encoder.graph.session.get_providers()[0]
        want = TRT if row.backend.startswith("TensorRT") else CUDA
        if runs != want:
            raise EncoderError(f"{row.role} {row.backend}: onnxruntime runs it on {runs}")


def measure(rows: list[Row], captions: list[str], cfg: BenchConfig) -> None:
    """Throughput and latency passes with the row order rotated each pass."""
    lat = captions[: cfg.latency_n]
    for row in rows:  # warm-up: first calls allocate, build kernels or TensorRT engines
        assert row.encoder is not None
        row.encoder.encode(captions[: cfg.batch_size], prefix="query", batch_size=cfg.batch_size)
        row.encoder.encode(lat[:1], prefix="query", batch_size=1)
    for p in range(cfg.passes):
        shift = p % len(rows)
        for row in rows[shift:] + rows[:shift]:
            enc = row.encoder
            assert enc is not None
            t0 = time.perf_counter()
            enc.encode(captions[: cfg.n], prefix="query", batch_size=cfg.batch_size)
            row.throughput.append(min(cfg.n, len(captions)) / (time.perf_counter() - t0))
            for text in lat:
                t0 = time.perf_counter()
                enc.encode([text], prefix="query", batch_size=1)
                row.latency_ms.append(1000 * (time.perf_counter() - t0))
            log.info("pass %d %s %s: %.1f/s", p + 1, row.role, row.backend, row.throughput[-1])


def summarize(rows: list[Row], params: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """The table's rows as plain data, with ratios against the teacher in PyTorch fp32."""
    med = {(r.role, r.backend): statistics.median(r.throughput) for r in rows}
    p50 = {(r.role, r.backend): float(np.percentile(r.latency_ms, 50)) for r in rows}
    base = BASELINE if BASELINE in med else next(iter(med))
    torch_r1 = {r.role: r.r1.get("mean") for r in rows if r.backend == "PyTorch fp32"}
    out = []
    for r in rows:
        key = (r.role, r.backend)
        total, non_emb = params[r.role]
        mean_r1, ref_r1 = r.r1.get("mean"), torch_r1.get(r.role)
        out.append(
            {
                "model": r.role,
                "backend": r.backend,
                "device": r.device,
                "params_total": total,
                "params_non_embedding": non_emb,
                "throughput": {
                    "median": med[key],
                    "min": min(r.throughput),
                    "max": max(r.throughput),
                    "passes": r.throughput,
                },
                "speedup_vs_teacher_pytorch_fp32": med[key] / med[base],
                "latency_ms": {
                    "p50": p50[key],
                    "p95": float(np.percentile(r.latency_ms, 95)),
                    "n": len(r.latency_ms),
                },
                "latency_speedup_vs_teacher_pytorch_fp32": p50[base] / p50[key],
                "r1": r.r1,
                "r1_delta_vs_pytorch_fp32": (
                    mean_r1 - ref_r1 if mean_r1 is not None and ref_r1 is not None else None
                ),
            }
        )
    return out


def targets(table: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's two CPU targets, evaluated on the measured rows (None when a row is missing)."""
    by = {(t["model"], t["backend"]): t for t in table}
    thr = {k: v["throughput"]["median"] for k, v in by.items()}
    out: dict[str, Any] = {}
    s_int8, s_torch = ("student", "ONNX int8"), ("student", "PyTorch fp32")
    if s_int8 in by and s_torch in by:
        ratio = thr[s_int8] / thr[s_torch]
        delta = by[s_int8]["r1_delta_vs_pytorch_fp32"]
        out["student_int8_vs_student_pytorch"] = {
            "speedup": ratio,
            "r1_delta": delta,
            "met": ratio >= TARGET_SPEEDUP and delta is not None and abs(delta) <= TARGET_R1_POINTS,
        }
    same = {}
    for backend in dict.fromkeys(b for _, b in by):
        if ("student", backend) in by and ("teacher", backend) in by:
            ratio = thr[("student", backend)] / thr[("teacher", backend)]
            same[backend] = {"speedup": ratio, "met": ratio >= TARGET_SPEEDUP}
    out["student_vs_teacher_same_backend"] = same
    return out


def run_bench(cfg: BenchConfig, command: str) -> dict[str, Any]:
    """Load every row, measure quality once and speed in interleaved passes; return the report."""
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, command)
    finally:
        torch.set_num_threads(threads_before)


def _run(cfg: BenchConfig, command: str) -> dict[str, Any]:
    notes: list[str] = []
    rows = build_rows(cfg, notes)
    data = read_parallel(cfg.data_dir, cfg.split, cfg.quality_langs, cfg.quality_limit)
    timed = read_parallel(cfg.data_dir, cfg.split, [cfg.lang])[cfg.lang]
    load_before = os.getloadavg()
    params: dict[str, tuple[int, int]] = {}
    kept: list[Row] = []
    for row in rows:
        try:
            row.encoder = row.load()
            _check_provider(row)
        except EncoderError as e:  # a failed parity gate or a provider that did not load
            notes.append(f"{row.role} {row.backend} skipped: {e}")
            continue
        if row.backend == "PyTorch fp32":
            params[row.role] = count_params(row.encoder)
        r1 = r1_by_lang(row.encoder, data)
        row.r1 = {**r1, "mean": float(np.mean(list(r1.values())))}
        kept.append(row)
    measure(kept, timed, cfg)
    table = summarize(kept, params)
    return {
        "machine": machine(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "torch_threads": torch.get_num_threads(),
        "command": command,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()},
        "timed_captions": {"split": cfg.split, "lang": cfg.lang, "n": min(cfg.n, len(timed))},
        "rows": table,
        "targets": targets(table),
        "notes": notes,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
