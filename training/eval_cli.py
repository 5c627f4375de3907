"""``polyclip eval``: students vs the teacher and base baselines, as JSON, markdown and PNGs;
``polyclip eval drift``: how far a student moved from its base on any monolingual text."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from polyclip.encoders.argtypes import str_list
from polyclip.encoders.captions import read_captions, read_parallel
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.gettext import is_gettext_dir, read_gettext
from polyclip.encoders.load import load_text_encoder
from polyclip.encoders.report import write_report
from polyclip.training.data import default_data_dir
from polyclip.training.evaluate import (
    PURITY_K,
    evaluate_models,
    markdown_table,
    plot_projection,
    plot_recall,
    retention_markdown,
)
from polyclip.training.retention import (
    SIMILARITY_TEXTS,
    similarity_preservation,
    write_card_retention,
)


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="cross-lingual retrieval of students in the teacher's space, with baselines",
        description="Queries: captions in each language embedded by a student; documents: the "
        "English captions embedded by the teacher. Baselines: the teacher on each language and "
        "the student's base model in its own space; with --base, each student's retention per "
        "language is written into its card (polyclip.json) unless --no-card. Data: Multi30k-style "
        "aligned files, or gettext catalogues (a directory of */LC_MESSAGES/*.po; --split "
        "val|test|all). Writes eval.json, eval.md, r1_by_language.png and purity_projection.png "
        "to --out and prints the tables. `polyclip eval drift -h`: label-free drift.",
    )
    p.add_argument(
        "--student",
        action="extend",
        nargs="+",
        default=[],
        metavar="PATH",
        help="student model(s); several are compared against one teacher document embedding",
    )
    p.add_argument("--teacher", metavar="PATH", help="teacher model (required)")
    p.add_argument("--base", metavar="PATH", help="the students' base model, scored in its space")
    p.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="line-aligned {split}.{lang}.gz files (default: $POLYCLIP_DATA, "
        "data/multi30k, ../shared/data/multi30k) or gettext catalogues",
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
    p.add_argument(
        "--no-card", action="store_true", help="do not record retention in the student cards"
    )
    p.set_defaults(func=cmd_eval)
    drift = p.add_subparsers(dest="eval_command", metavar="drift").add_parser(
        "drift",
        help="label-free drift: does a student keep its base's similarities on your texts?",
        description="Embed the texts of FILE (one per line, .gz ok) with the student and with its "
        "base (with the base's query prefix) and report Spearman's ρ between the two matrices "
        "of pairwise cosines: 1.0 means the student orders every pair as its base does. No "
        "labels or translations needed: run it on a sample of your own traffic, per language.",
    )
    drift.add_argument("--student", required=True, metavar="PATH")
    drift.add_argument("--base", required=True, metavar="PATH")
    drift.add_argument("--texts", required=True, type=Path, metavar="FILE")
    drift.add_argument("--limit", type=int, default=SIMILARITY_TEXTS, metavar="N")
    drift.add_argument("--device", default="cpu")
    drift.set_defaults(func=cmd_drift)


def read_eval_data(
    source: Path, split: str, langs: list[str], limit: int | None
) -> dict[str, list[str]]:
    """Aligned texts, "en" first: gettext catalogues or Multi30k-style line-aligned files."""
    if is_gettext_dir(source):
        return read_gettext(source, split, langs, limit)
    return read_parallel(source, split, langs, limit)


def cmd_eval(args: argparse.Namespace) -> int:
    if not args.teacher:
        raise EncoderError("eval needs --teacher (or the `drift` subcommand)")
    if args.limit is not None and args.limit < 1:
        raise EncoderError(f"--limit must be >= 1, got {args.limit}")
    data_dir = args.data or default_data_dir()
    query_langs = [lang for lang in args.langs if lang != "en"]
    if not query_langs:
        raise EncoderError("cross-lingual evaluation needs at least one language other than en")
    data = read_eval_data(Path(data_dir), args.split, query_langs, args.limit)
    langs = [lang for lang in data if lang != "en"]
    results = evaluate_models(
        args.teacher, args.student, data, langs, base=args.base, device=args.device
    )
    table = markdown_table(results, langs)
    kept = retention_markdown(results, langs)
    source = f"{Path(data_dir).name}/{args.split}"
    recorded = []
    if not args.no_card:
        for r in results:
            if r.retention and write_card_retention(Path(r.path), source, r.retention):
                recorded.append(r.path)
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
    title = f"# polyclip eval: {source}, {len(data['en'])} texts, X→en\n\n"
    markdown = title + table + (f"\n## Retention\n\n{kept}" if kept else "")
    figures = {
        "r1_by_language": plot_recall(results, langs),
        "purity_projection": plot_projection(results),
    }
    write_report(args.out, "eval", report, markdown, figures)
    print(markdown.removeprefix(title), end="")
    for path in recorded:
        print(f"retention on {source} recorded in {path}/polyclip.json")
    print(f"\nwritten to {args.out}/: eval.json eval.md r1_by_language.png purity_projection.png")
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    texts = [t for t in read_captions(args.texts) if t][: max(3, args.limit)]
    student = load_text_encoder(args.student, device=args.device)
    base = load_text_encoder(args.base, device=args.device)
    rho = similarity_preservation(student.encode(texts), base.encode(texts, prefix="query"))
    print(json.dumps({"texts": len(texts), "similarity_rho": round(rho, 4)}))
    return 0
