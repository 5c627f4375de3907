"""``polyclip train``: a YAML recipe plus command-line overrides → one distillation run.

Single device: ``polyclip train --config default``; several GPUs:
``torchrun --nproc_per_node 4 -m polyclip train --config dr``. ``polyclip train bench`` times
training steps (fp32 vs bf16, random vs length-grouped batches) on the machine at hand;
``polyclip train summary RUN...`` tabulates finished runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from polyclip.encoders.argtypes import float_list, positive_int, str_list
from polyclip.training import summary
from polyclip.training.config import load_config, parse_assignment

# Named flags for the settings changed most often; any other one goes through --set KEY=VALUE.
FLAGS: dict[str, tuple[type, str]] = {
    "teacher": (str, "teacher model directory (sentence-transformers or CLIP/SigLIP)"),
    "student": (str, "student base model directory (e.g. multilingual-e5-small)"),
    "data": (str, "data directory (Multi30k layout) or a .tsv/.csv/.jsonl file"),
    "out": (str, "run directory (checkpoint.pt, metrics.jsonl, student/)"),
    "loss": (str, "objective(s): fd, ed, sd, mcl, dr or a sum such as dr+ed+fd"),
    "languages": (str, "comma-separated languages, e.g. de,fr,cs"),
    "epochs": (int, "epochs over the training pairs"),
    "max_steps": (int, "optimizer steps (overrides epochs when > 0)"),
    "batch_size": (int, "pairs per optimizer step"),
    "lr": (float, "peak learning rate"),
    "queue_size": (int, "DR queue length K"),
    "precision": (
        str,
        "fp32, fp16 (CUDA), bf16 (CUDA, or a CPU with AVX512-BF16/AMX) or auto (bf16 where native)",
    ),
    "device": (str, "auto, cpu, cuda, cuda:1, ..."),
    "seed": (int, "random seed"),
}


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="distil a multilingual student into a teacher's embedding space",
        description="Train a student from a YAML recipe (training/recipes/NAME.yaml or a path); "
        "flags and --set KEY=VALUE override the recipe.",
    )
    p.add_argument("--config", metavar="RECIPE", help="recipe name (default, fd, dr, ...) or path")
    for key, (kind, text) in FLAGS.items():
        p.add_argument(f"--{key.replace('_', '-')}", dest=key, type=kind, help=text)
    p.add_argument(
        "--freeze-embeddings",
        action=argparse.BooleanOptionalAction,
        help="keep the word-embedding matrix fixed (much faster AdamW on CPU)",
    )
    p.add_argument(
        "--group-by-length",
        action=argparse.BooleanOptionalAction,
        help="batch texts of similar token length together (less padding, faster steps)",
    )
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        help="continue from OUT/checkpoint.pt when present (default: yes)",
    )
    p.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other setting, e.g. --set eval_every=100 (repeatable)",
    )
    p.set_defaults(func=cmd_train)
    subs = p.add_subparsers(dest="train_command", metavar="{bench,summary,wise}")
    summary.add_cli(subs)
    bench = subs.add_parser(
        "bench",
        help="training-step speed: fp32 vs bf16, random vs length-grouped batches",
        description="Time optimizer steps of a student on parallel captions under four settings, "
        "taking turns step by step; writes train_step.json/.md/.png.",
    )
    bench.add_argument("--student", required=True, help="student base model directory")
    bench.add_argument("--data", metavar="DIR", help="Multi30k layout (default: as polyclip train)")
    bench.add_argument("--split", default="train", metavar="NAME")
    bench.add_argument("--langs", type=str_list, default=["de", "fr", "cs"], metavar="de,fr,cs")
    bench.add_argument("--batch-size", type=positive_int, default=64)
    bench.add_argument("--steps", type=positive_int, default=10, help="measured steps per setting")
    bench.add_argument("--limit", type=int, default=0, metavar="N", help="first N pairs/language")
    bench.add_argument("--out", default="artifacts/bench", help="directory for train_step.*")
    bench.set_defaults(func=cmd_train_bench)
    wise = subs.add_parser(
        "wise",
        help="WiSE-FT: interpolate a run's student towards its base at several alphas",
        description="Write RUN/wise-ALPHA/ for each alpha: backbone and head interpolated "
        "between the base (with the run's initial least-squares head) and the trained student. "
        "Evaluate them with `polyclip eval --base ...` and choose alpha on validation.",
    )
    wise.add_argument("run", type=Path, metavar="RUN")
    wise.add_argument("--alphas", type=float_list, default=[0.25, 0.5, 0.75], metavar="A,B")
    wise.set_defaults(func=cmd_train_wise)


def cmd_train(args: argparse.Namespace) -> int:
    from polyclip.training.trainer import train  # torch-heavy; keep `polyclip --help` fast

    overrides = dict(parse_assignment(a) for a in args.assignments)
    for key in [*FLAGS, "freeze_embeddings", "group_by_length", "resume"]:
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    summary = train(load_config(args.config, overrides))
    print(json.dumps(summary))
    return 0


def cmd_train_bench(args: argparse.Namespace) -> int:
    from polyclip.training.data import default_data_dir  # torch-heavy imports only when run
    from polyclip.training.speed import StepSpeedConfig, measure_steps, write_step_report

    cfg = StepSpeedConfig(
        student=args.student,
        data=str(args.data or default_data_dir()),
        split=args.split,
        languages=tuple(args.langs),
        batch_size=args.batch_size,
        steps=args.steps,
        limit=max(0, args.limit),
    )
    paths = write_step_report(measure_steps(cfg), args.out)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_train_wise(args: argparse.Namespace) -> int:
    from polyclip.training.wise import interpolate  # torch-heavy

    for alpha in args.alphas:
        out = interpolate(args.run, alpha, args.run / f"wise-{alpha:g}")
        print(json.dumps({"alpha": alpha, "student": str(out)}))
    return 0
