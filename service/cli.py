"""``polyclip serve --config PATH``: the HTTP service, with uvicorn."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import uvicorn

from polyclip.encoders.argtypes import positive_int, str_list
from polyclip.service.config import CONFIG_ENV, ConfigError, config_path, load_settings
from polyclip.service.store import QUANTIZATIONS

GRACEFUL_SHUTDOWN_S = 30  # in-flight requests get this long to finish after SIGTERM; the pod's
# terminationGracePeriodSeconds (deploy/k8s) must be longer, or the final flush is killed


def _shard(text: str) -> tuple[int, int]:
    index, _, total = text.partition("/")
    try:
        return int(index), int(total)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes i/n, e.g. 0/4; got {text!r}") from None


def add_index_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="embed a corpus in-process and upsert it (resumable, idempotent, sharded)",
        description="Embed FILE (txt: a text per line; JSONL; CSV; Parquet) with the model and "
        "upsert it into the embedded store in --data-dir (the layout `polyclip serve` reads) or "
        "a Qdrant server (--qdrant-url), exactly as the API would. With --shard i/n, only items "
        "whose id hashes to shard i: N workers index one corpus into one server.",
    )
    p.add_argument("--model", required=True, help="alias or model of --config, or a model dir")
    p.add_argument("--collection", required=True)
    p.add_argument("--input", required=True, type=Path, metavar="FILE")
    p.add_argument("--config", type=Path, help="the server's models YAML (for aliases)")
    p.add_argument("--text-field", default="text")
    p.add_argument("--id-field", help="default: a UUIDv5 of collection and text")
    p.add_argument("--payload-fields", type=str_list, default=[], metavar="A,B")
    p.add_argument("--shard", type=_shard, default=(0, 1), metavar="i/n")
    p.add_argument("--batch", type=positive_int, default=256)
    p.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        default="none",
        help="when the collection is created: Qdrant's int8 or binary quantisation",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument("--data-dir", type=Path, help="the embedded store (default from config)")
    target.add_argument("--qdrant-url", help="a Qdrant server")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--state-dir", type=Path, default=Path("artifacts/index-state"),
                   help="where progress is recorded for resuming")  # fmt: skip
    p.set_defaults(func=cmd_index)


def cmd_index(args: argparse.Namespace) -> int:
    import asyncio

    from polyclip.service.indexer import IndexJob, run_index  # torch: only when indexing

    job = IndexJob(
        model=args.model, collection=args.collection, input=args.input,
        text_field=args.text_field, id_field=args.id_field, payload_fields=args.payload_fields,
        shard=args.shard, batch=args.batch, config=args.config, data_dir=args.data_dir,
        qdrant_url=args.qdrant_url, device=args.device, state_dir=args.state_dir,
        quantization=args.quantization,
    )  # fmt: skip
    print(json.dumps(asyncio.run(run_index(job))))
    return 0


def add_store_cli(sub: argparse._SubParsersAction) -> None:
    store = sub.add_parser("store", help="the embedded store: `store bench`")
    actions = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    p = actions.add_parser(
        "bench",
        help="quantised collections: recall on a real corpus, memory and latency at 1M vectors",
        description="Build float, int8 and binary collections on the embedded store: on every "
        "English caption of --data (teacher) with student queries of --query-split (Recall@10 "
        "vs exact float search, R@1), and on --synthetic random vectors (build time, disk, "
        "resident memory per vector, search p50/p95). Writes store.json/.md/.png to --out.",
    )
    p.add_argument("--teacher", required=True, help="the index model (documents)")
    p.add_argument("--student", required=True, help="the query model")
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="Multi30k layout")
    p.add_argument("--langs", type=str_list, default=["de", "fr", "cs"], metavar="de,fr,cs")
    p.add_argument("--query-split", default="val", metavar="NAME")
    p.add_argument("--synthetic", type=int, default=1_000_000, metavar="N", help="0: skip")
    p.add_argument("--latency-queries", type=positive_int, default=500, metavar="N")
    p.add_argument("--work", type=Path, default=Path("artifacts/store-bench"), metavar="DIR")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.set_defaults(func=cmd_store_bench)


def cmd_store_bench(args: argparse.Namespace) -> int:
    from polyclip.encoders.report import write_report
    from polyclip.service import store_bench  # torch and the store: only when benchmarking

    cfg = store_bench.StoreBenchConfig(
        teacher=args.teacher, student=args.student, data=args.data, work=args.work,
        langs=args.langs, query_split=args.query_split, synthetic=max(0, args.synthetic),
        latency_queries=args.latency_queries,
    )  # fmt: skip
    report = store_bench.run_store_bench(cfg)
    text = store_bench.markdown(report)
    write_report(args.out, "store", report, text, {"store": store_bench.plot(report)})
    print(text, end="")
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    add_index_cli(sub)
    add_store_cli(sub)
    p = sub.add_parser(
        "serve",
        help="serve models over HTTP: embeddings, collections and search",
        description="Serve the models listed in a YAML config (see deploy/models.example.yaml) "
        "with dynamic batching and an embedded Qdrant store (or QDRANT_URL).",
    )
    p.add_argument("--config", help=f"YAML config (default: ${CONFIG_ENV})")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="processes; more than 1 needs QDRANT_URL")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    if path is None:
        raise ConfigError(f"give --config PATH or set {CONFIG_ENV}")
    os.environ["POLYCLIP_HOST"] = args.host  # the bind address decides the access defaults
    settings = load_settings(path)  # fail here, in one line, before uvicorn starts
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    common = dict(
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        timeout_keep_alive=settings.keepalive_timeout_s,
    )
    if args.workers == 1:
        from polyclip.service.app import create_app  # imports torch: only once the config is valid

        uvicorn.run(create_app(settings, path), **common)
        return 0
    if not settings.qdrant_url:
        raise ConfigError(
            "the embedded store belongs to one process: use --workers 1, or set QDRANT_URL so "
            "the workers share a Qdrant server"
        )
    os.environ[CONFIG_ENV] = str(path.resolve())  # each worker process reads it
    uvicorn.run(
        "polyclip.service.app:create_app_from_env", factory=True, workers=args.workers, **common
    )
    return 0
