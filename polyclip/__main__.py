"""The one console script: ``polyclip <stage> ...`` dispatches to each stage's ``cli.py``."""

from __future__ import annotations

import argparse
import logging
import sys

from polyclip import __version__, prepare
from polyclip.bench import cli as bench_cli
from polyclip.encoders import cli as encode_cli
from polyclip.encoders.errors import PolyclipError
from polyclip.export import cli as export_cli
from polyclip.service import cli as serve_cli
from polyclip.training import cli as train_cli
from polyclip.training import eval_cli

STAGES = [prepare, encode_cli, train_cli, eval_cli, bench_cli, serve_cli, export_cli]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polyclip", description=__doc__)
    parser.add_argument("--version", action="version", version=f"polyclip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in STAGES:
        stage.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; user errors become one line on stderr and exit 2, never a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PolyclipError as e:
        print(f"polyclip {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
