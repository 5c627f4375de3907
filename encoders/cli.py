"""``polyclip encode``: embed texts or images from the command line, one JSON array per line."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from polyclip.encoders.errors import EncoderError
from polyclip.encoders.load import load_encoders


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode",
        help="embed texts or images with any model directory or hub id",
        description="Print one JSON array (a unit vector) per input text or image.",
    )
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed")
    p.add_argument("--model", required=True, help="model directory or hub id")
    p.add_argument("--prefix", choices=["query", "passage"], help="apply the model's prefix")
    p.add_argument("--file", help="embed each line of this file ('-' for stdin)")
    p.add_argument("--image", nargs="+", default=[], metavar="PATH", help="images to embed")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=cmd_encode)


def _read_lines(path: str) -> list[str]:
    try:
        stream = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        raise EncoderError(f"cannot read {path}: {e.strerror}") from e
    with stream:
        return [line.rstrip("\n") for line in stream]


def cmd_encode(args: argparse.Namespace) -> int:
    texts = list(args.texts) + (_read_lines(args.file) if args.file else [])
    if not texts and not args.image:
        raise EncoderError("nothing to encode: give TEXT arguments, --file or --image")
    text_enc, image_enc = load_encoders(args.model, device=args.device)
    rows: list[np.ndarray] = []
    if texts:
        rows.append(text_enc.encode(texts, prefix=args.prefix, batch_size=args.batch_size))
    if args.image:
        if image_enc is None:
            raise EncoderError(f"{args.model} has no image tower (a text-only model)")
        rows.append(image_enc.encode(args.image, batch_size=args.batch_size))
    out = sys.stdout
    for vec in np.concatenate(rows):
        out.write(json.dumps([round(float(v), 7) for v in vec]) + "\n")
    return 0
