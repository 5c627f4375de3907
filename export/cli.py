"""``polyclip export``: a parity-gated ONNX bundle; ``polyclip export bench``: the speed table."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from polyclip.encoders.argtypes import str_list
from polyclip.encoders.captions import read_captions
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.onnx_bundle import RuntimeOptions
from polyclip.encoders.report import write_report
from polyclip.export import compare, efficiency, report
from polyclip.export.bundle import ExportOptions, export_bundle
from polyclip.export.efficiency import MAX_BATCH, EfficiencyConfig, run_efficiency
from polyclip.export.parity import THRESHOLDS, ValSet, describe
from polyclip.export.quantize import PRECISIONS, Int8Recipe
from polyclip.export.speed import BenchConfig, run_bench


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        allow_abbrev=False,  # prefixes would be matched against the bench flags too
        help="export a model to an ONNX bundle (parity-checked); `export bench`: speed table",
        description="Write an ONNX bundle (graph with pooling, head and L2 norm inside, "
        "tokenizer, bundle.json) and fail with exit code 2 unless it matches the PyTorch model: "
        + ", ".join(f"cosine ≥ {v} ({k})" for k, v in THRESHOLDS.items())
        + ". Run `polyclip export bench -h` for the speed table.",
    )
    p.add_argument("--model", help="source model directory: student, ST teacher, CLIP/SigLIP")
    p.add_argument("--out", type=Path, help="bundle directory to write (replaced if a bundle)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument(
        "--tower",
        choices=["text", "image", "both"],
        help="towers to export (default: every tower the model has)",
    )
    p.add_argument("--val-data", type=Path, help="Multi30k-style dir for the ΔR@1 report")
    p.add_argument("--val-split", default="val")
    p.add_argument("--val-langs", type=str_list, default=["de", "fr", "cs"], help="e.g. de,fr,cs")
    p.add_argument("--val-limit", type=int, help="use only the first N validation captions")
    p.add_argument(
        "--min-cosine", type=float, help="parity threshold (default: by precision, see above)"
    )
    p.add_argument("--no-optimize", action="store_true", help="skip onnxruntime graph fusion")
    p.add_argument("--device", default="cpu", help="where the parity check runs: cpu, cuda[:N]")
    p.add_argument(
        "--int8-keep-fp32",
        metavar="REGEX",
        help="int8: MatMul nodes (module paths) left in fp32 (default: by architecture)",
    )
    p.add_argument(
        "--int8-reduce-range",
        action=argparse.BooleanOptionalAction,
        help="int8: 7-bit weights, for CPUs without VNNI (default: by architecture, mostly on)",
    )
    p.add_argument(
        "--int8-method",
        choices=["dynamic", "static"],
        help="int8: activation scales per batch at run time, or static QDQ from calibration",
    )
    p.add_argument("--int8-static-calibration", choices=["minmax", "percentile"])
    p.add_argument(
        "--int8-smooth", metavar="REGEX", help="int8: SmoothQuant scales before these MatMuls"
    )
    p.add_argument("--int8-smooth-alpha", type=float, metavar="A", help="SmoothQuant α (0.5)")
    p.add_argument(
        "--int8-op-types",
        type=str_list,
        metavar="OPS",
        help="int8 (dynamic): ONNX op types to quantize, e.g. MatMul,Gather (default: the "
        "architecture's recipe; with other --int8-* options given, onnxruntime's set, fused "
        "Attention included)",
    )
    p.add_argument(
        "--calibration-data",
        type=Path,
        metavar="DIR",
        help="Multi30k-style dir: training captions for static int8 and SmoothQuant",
    )
    p.add_argument("--calibration-split", default="train")
    g = p.add_argument_group("runtime defaults stored in bundle.json")
    g.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all cores)")
    g.add_argument(
        "--spin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="idle intra-op threads spin (onnxruntime's default) instead of sleeping",
    )
    g.add_argument("--trt-fp16", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--trt-cache", default="", help="TensorRT engine cache dir (default in bundle)")
    for kind in ("min", "opt", "max"):
        g.add_argument(
            f"--trt-{kind}-shapes",
            default="",
            help=f"TensorRT {kind} shapes of the text tower, e.g. input_ids:1x1,attention_mask:1x1",
        )
    p.set_defaults(func=cmd_export)
    subs = p.add_subparsers(dest="export_command", metavar="{bench,compare,efficiency}")
    bench = subs.add_parser(
        "bench",
        help="teacher vs student × backend: throughput, latency, speed-up and R@1",
        description="Measure the speed table in one run (interleaved passes) and write "
        "speed.json, speed.md and speed.png.",
    )
    bench.add_argument("--teacher", required=True, help="teacher model directory")
    bench.add_argument("--student", required=True, help="student model directory")
    bench.add_argument("--data", type=Path, required=True, help="Multi30k-style directory")
    bench.add_argument("--out", type=Path, required=True, help="report directory")
    bench.add_argument("--work", type=Path, help="bundle cache (default OUT/bundles)")
    bench.add_argument("--split", default="val")
    bench.add_argument("--lang", default="de", help="language of the timed captions")
    bench.add_argument("--quality-langs", type=str_list, default=["de", "fr", "cs"])
    bench.add_argument("--quality-limit", type=int, help="first N captions for R@1")
    bench.add_argument("--captions", type=int, default=1000, help="per throughput pass")
    bench.add_argument("--latency-captions", type=int, default=200, help="batch-1 calls per pass")
    bench.add_argument("--passes", type=int, default=3)
    bench.add_argument("--batch-size", type=int, default=32)
    bench.add_argument("--threads", type=int, default=0, help="torch and onnxruntime threads")
    bench.add_argument("--no-gpu", action="store_true", help="CPU rows only")
    bench.set_defaults(func=cmd_bench)
    cmp = subs.add_parser(
        "compare",
        help="several bundles of one model: conversion, parity figures and speed side by side",
        description="Read each bundle's conversion and parity from bundle.json and time them "
        "on the same captions in interleaved passes. Writes compare.json, .md and .png.",
    )
    cmp.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE")
    cmp.add_argument("--data", type=Path, required=True, help="Multi30k-style directory")
    cmp.add_argument("--split", default="val")
    cmp.add_argument("--lang", default="de", help="language of the timed captions")
    cmp.add_argument("--captions", type=int, default=1000)
    cmp.add_argument("--passes", type=int, default=3)
    cmp.add_argument("--batch-size", type=int, default=32)
    cmp.add_argument("--out", type=Path, required=True, help="report directory")
    cmp.set_defaults(func=cmd_compare)
    eff = subs.add_parser(
        "efficiency",
        help="serving efficiency: the bundle's CPU per text in-process vs the server's",
        description="For each level of a `polyclip bench load` report, encode the same texts "
        "in-process with the same bundle and its bundle.json runtime settings, at batch "
        f"min(texts per request × clients, {MAX_BATCH}), and divide its CPU per text by the "
        "server's. Writes efficiency.json, .md and .png.",
    )
    eff.add_argument("--bundle", type=Path, required=True, help="the bundle the server served")
    eff.add_argument("--load", type=Path, required=True, help="load.json of `polyclip bench load`")
    eff.add_argument("--texts", type=Path, required=True, help="the file `bench load` sent")
    eff.add_argument("--min-texts", type=int, default=2000, help="texts per measurement")
    eff.add_argument("--out", type=Path, required=True, help="report directory")
    eff.set_defaults(func=cmd_efficiency)


def cmd_export(args: argparse.Namespace) -> int:
    if not args.model or not args.out:
        raise EncoderError("export needs --model and --out (or the `bench` subcommand)")
    val = None
    if args.val_data:
        val = ValSet(args.val_data, args.val_split, tuple(args.val_langs), args.val_limit)
    runtime = RuntimeOptions(
        intra_op_threads=args.threads,
        allow_spinning=args.spin,
        trt_fp16=args.trt_fp16,
        trt_engine_cache_dir=args.trt_cache,
        trt_profile_min_shapes=args.trt_min_shapes,
        trt_profile_opt_shapes=args.trt_opt_shapes,
        trt_profile_max_shapes=args.trt_max_shapes,
    )
    int8 = None
    chosen = (args.int8_keep_fp32, args.int8_reduce_range, args.int8_method,
              args.int8_static_calibration, args.int8_smooth, args.int8_smooth_alpha,
              args.int8_op_types)  # fmt: skip
    if any(v is not None for v in chosen):  # an explicit recipe, from the plain defaults
        int8 = Int8Recipe(
            keep_fp32=args.int8_keep_fp32 or "",
            reduce_range=True if args.int8_reduce_range is None else args.int8_reduce_range,
            method=args.int8_method or "dynamic",
            static_calibration=args.int8_static_calibration or "minmax",
            smooth=args.int8_smooth or "",
            smooth_alpha=0.5 if args.int8_smooth_alpha is None else args.int8_smooth_alpha,
            op_types=tuple(args.int8_op_types or ()),
        )
    if (int8 is not None or args.calibration_data) and args.precision != "int8":
        raise EncoderError("the --int8-* options and --calibration-data need --precision int8")
    if int8 is not None and int8.needs_calibration and not args.calibration_data:
        raise EncoderError("static int8 and SmoothQuant need calibration text: --calibration-data")
    calibration = None
    if args.calibration_data:
        calibration = ValSet(args.calibration_data, args.calibration_split, tuple(args.val_langs))
    opts = ExportOptions(
        precision=args.precision,
        towers=[] if args.tower in (None, "both") else [args.tower],
        val=val,
        min_cosine=args.min_cosine,
        optimize=not args.no_optimize,
        device=args.device,
        runtime=runtime,
        int8=int8,
        calibration=calibration,
    )
    meta = export_bundle(args.model, args.out, opts)
    print(f"{args.out}: {args.precision} bundle, parity passed: {describe(meta['parity'])}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    result = compare.compare_bundles(
        args.bundles, args.data, args.split, args.lang, args.captions, max(1, args.passes),
        args.batch_size,
    )  # fmt: skip
    text = compare.markdown(result)
    write_report(args.out, "compare", result, text, {"compare": compare.plot(result)})
    print(text, end="")
    return 0


def cmd_efficiency(args: argparse.Namespace) -> int:
    try:
        load = json.loads(args.load.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise EncoderError(f"cannot read the load report {args.load}: {e}") from e
    texts = [t for t in read_captions(args.texts) if t]
    cfg = EfficiencyConfig(args.bundle, texts, load, min_texts=max(1, args.min_texts))
    result = run_efficiency(cfg)
    text = efficiency.markdown(result)
    write_report(args.out, "efficiency", result, text, {"efficiency": efficiency.plot(result)})
    print(text, end="")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    cfg = BenchConfig(
        teacher=args.teacher,
        student=args.student,
        data_dir=args.data,
        out=args.out,
        work=args.work,
        split=args.split,
        lang=args.lang,
        quality_langs=tuple(args.quality_langs),
        quality_limit=args.quality_limit,
        n=args.captions,
        latency_n=args.latency_captions,
        passes=args.passes,
        batch_size=args.batch_size,
        threads=args.threads,
        gpu=not args.no_gpu,
    )
    paths = report.write(run_bench(cfg, shlex.join(sys.argv)), args.out)
    print("\n".join(str(p) for p in paths.values()))
    return 0
