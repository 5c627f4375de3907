"""``polyclip serve --config PATH``: the HTTP service, with uvicorn."""

from __future__ import annotations

import argparse
import os

import uvicorn

from polyclip.service.config import CONFIG_ENV, ConfigError, config_path, load_settings

GRACEFUL_SHUTDOWN_S = 30  # in-flight requests get this long to finish after SIGTERM; the pod's
# terminationGracePeriodSeconds (deploy/k8s) must be longer, or the final flush is killed


def add_cli(sub: argparse._SubParsersAction) -> None:
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
