"""``polyclip eval``: students vs the teacher and base baselines, as JSON, markdown and PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

from polyclip.encoders.argtypes import str_list
from polyclip.encoders.captions import read_parallel
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.report import write_report
from polyclip.training.data import default_data_dir
from polyclip.training.evaluate import (
    PURITY_K,
    evaluate_models,
    markdown_table,
    plot_projection,
    plot_recall,
)


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="cross-lingual retrieval of students in the teacher's space, with baselines",
        description="Queries: captions in each language embedded by a student; documents: the "
        "English captions embedded by the teacher. Baselines: the teacher on each language and "
        "the student's base model in its own space. Writes eval.json, eval.md, r1_by_language.png"
        " and purity_projection.png to --out and prints the markdown table.",
    )
    p.add_argument(
        "--student",
        action="extend",
        nargs="+",
        default=[],
        metavar="PATH",
        help="student model(s); several are compared against one teacher document embedding",
    )
    p.add_argument("--teacher", required=True, metavar="PATH", help="teacher model")
    p.add_argument("--base", metavar="PATH", help="the students' base model, scored in its space")
    p.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="line-aligned {split}.{lang}.gz files (default: $POLYCLIP_DATA, "
        "data/multi30k, ../shared/data/multi30k)",
    )
    p.add_argument("--split", default="val", help="file prefix, e.g. val or test_2016_flickr")
    p.add_argument(
        "--langs", type=str_list, default=["de", "fr", "cs"], help="query languages, e.g. de,fr,cs"
    )
    p.add_argument("--limit", type=int, metavar="N", help="only the first N captions")
    p.add_argument(
        "--out", type=Path, default=Path("artifacts/eval"), metavar="DIR", help="results folder"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise EncoderError(f"--limit must be >= 1, got {args.limit}")
    data_dir = args.data or default_data_dir()
    query_langs = [lang for lang in args.langs if lang != "en"]
    if not query_langs:
        raise EncoderError("cross-lingual evaluation needs at least one language other than en")
    data = read_parallel(data_dir, args.split, query_langs, args.limit)
    langs = [lang for lang in data if lang != "en"]
    results = evaluate_models(
        args.teacher, args.student, data, langs, base=args.base, device=args.device
    )
    table = markdown_table(results, langs)
    report = {
        "data": str(data_dir),
        "split": args.split,
        "captions": len(data["en"]),
        "languages": langs,
        "teacher": args.teacher,
        "purity_k": PURITY_K,
        "metrics": "r@k in %, mrr@10 in [0, 1]; avg is over the non-English languages",
        "models": [r.to_json() for r in results],
    }
    title = f"# polyclip eval: {args.split}, {len(data['en'])} captions, X→en\n\n"
    figures = {
        "r1_by_language": plot_recall(results, langs),
        "purity_projection": plot_projection(results),
    }
    write_report(args.out, "eval", report, title + table, figures)
    print(table, end="")
    print(f"\nwritten to {args.out}/: eval.json eval.md r1_by_language.png purity_projection.png")
    return 0
