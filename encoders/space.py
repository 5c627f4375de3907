"""Embedding-space ids: which weights made a vector, whatever folder they were copied to.

A model that defines a space (a sentence-transformers teacher, a CLIP/SigLIP model, any model
without a student card) is named ``<label>@<fingerprint>``: the label is the hub id where known,
else the architecture (``model_type``); the fingerprint is a SHA-256 over its tensors' names,
dtypes, shapes and bytes, in name order. File bytes would change on a re-save (header order,
metadata) and shapes alone are shared by every model of one config; tensor data is neither.
Only the fingerprint decides whether two ids are one space, so a copy of the same weights with
another label still matches.

``polyclip models prepare``, ``train`` and ``export`` record the id (``polyclip.json``, the
student card, ``bundle.json``); a directory with none computes it when loaded. Ids written before
fingerprints existed were folder names ("legacy" ids, no ``@``); the service still resolves them
(see :func:`same_space` and the registry), so old collections, cards and bundles keep working.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from polyclip.encoders.errors import EncoderError

CARD_FILE = "polyclip.json"
BUNDLE_FILE = "bundle.json"  # an ONNX bundle's description (polyclip.encoders.onnx_bundle)
MODEL_CARD_FORMAT = "polyclip-model/1"  # a teacher's card: only its recorded space
FINGERPRINT_HEX = 16
_CHUNK = 16 << 20
_NEW_ID = re.compile(rf"@([0-9a-f]{{{FINGERPRINT_HEX}}})$")
_HUB_CACHE = re.compile(r"models--([^/]+?)--([^/]+)/snapshots/")
# torch dtypes under the names safetensors writes, so a .bin and a .safetensors agree
_TORCH_DTYPES = {
    "torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16",
    "torch.float64": "F64", "torch.int64": "I64", "torch.int32": "I32", "torch.int16": "I16",
    "torch.int8": "I8", "torch.uint8": "U8", "torch.bool": "BOOL",
}  # fmt: skip


def fingerprint(space: str) -> str | None:
    """The fingerprint part of a space id; None for a legacy (folder-name) id."""
    match = _NEW_ID.search(space)
    return match[1] if match else None


def is_legacy(space: str) -> bool:
    return bool(space) and fingerprint(space) is None


def same_space(a: str, b: str) -> bool:
    """One space: equal fingerprints, or (legacy ids) equal strings."""
    fa, fb = fingerprint(a), fingerprint(b)
    return fa == fb if fa is not None and fb is not None else a == b


# ---- computing an id ---------------------------------------------------------------------
def _weight_dirs(model_dir: Path) -> list[tuple[str, Path]]:
    """(prefix, folder) of every module holding weights: ST modules, else the folder itself."""
    modules = model_dir / "modules.json"
    if not modules.is_file():
        return [("", model_dir)]
    try:
        paths = [m.get("path", "") for m in json.loads(modules.read_text(encoding="utf-8"))]
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise EncoderError(f"{modules} is not a readable module list: {e}") from e
    return [(f"{p}/" if p else "", model_dir / p) for p in dict.fromkeys(paths)]


def _safetensors(path: Path) -> Iterator[tuple[str, str, list[int], Callable[[Any], None]]]:
    """(name, dtype, shape, feed) per tensor; ``feed(h)`` hashes its bytes in 16 MiB reads."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
    except (struct.error, ValueError, OSError) as e:
        raise EncoderError(f"{path} is not a readable safetensors file: {e}") from e

    def feeder(start: int, end: int) -> Callable[[Any], None]:
        def feed(h: Any) -> None:
            with open(path, "rb") as f:
                f.seek(8 + size + start)
                left = end - start
                while left:
                    chunk = f.read(min(left, _CHUNK))
                    if not chunk:
                        raise EncoderError(f"{path} is truncated")
                    h.update(chunk)
                    left -= len(chunk)

        return feed

    for name, spec in header.items():
        if name != "__metadata__":
            yield name, spec["dtype"], spec["shape"], feeder(*spec["data_offsets"])


def _torch_bin(path: Path) -> Iterator[tuple[str, str, list[int], Callable[[Any], None]]]:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    for name, t in state.items():
        raw = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        dtype = _TORCH_DTYPES.get(str(t.dtype), str(t.dtype))
        yield name, dtype, list(t.shape), lambda h, raw=raw: h.update(raw.data)


def _tensor_files(folder: Path) -> list[Path]:
    found = sorted(folder.glob("*.safetensors"))
    return found or sorted(folder.glob("pytorch_model*.bin"))


def compute_fingerprint(model_dir: Path) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every tensor, combined in name order."""
    digests: dict[str, bytes] = {}
    for prefix, folder in _weight_dirs(model_dir):
        for file in _tensor_files(folder):
            reader = _safetensors if file.suffix == ".safetensors" else _torch_bin
            for name, dtype, shape, feed in reader(file):
                h = hashlib.sha256(f"{prefix}{name}\0{dtype}\0{shape}\0".encode())
                feed(h)
                digests[prefix + name] = h.digest()
    if not digests:
        raise EncoderError(f"{model_dir}: no weights (*.safetensors or pytorch_model*.bin)")
    total = hashlib.sha256(b"polyclip-space/1\0")
    for name in sorted(digests):
        total.update(digests[name])
    return total.hexdigest()[:FINGERPRINT_HEX]


def model_label(model_dir: Path) -> str:
    """The hub id when the folder is a hub snapshot, else the architecture from config.json."""
    match = _HUB_CACHE.search(model_dir.resolve().as_posix() + "/")
    if match:
        return f"{match[1]}/{match[2]}"
    config = _weight_dirs(model_dir)[0][1] / "config.json"
    try:
        return str(json.loads(config.read_text(encoding="utf-8"))["model_type"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return "model"


def compute_space_id(model_dir: Path, label: str | None = None) -> str:
    """``<label>@<fingerprint>`` for a model that defines its own space."""
    return f"{label or model_label(model_dir)}@{compute_fingerprint(model_dir)}"


# ---- recording an id ---------------------------------------------------------------------
def read_card(model_dir: Path) -> dict[str, Any]:
    """``polyclip.json`` (a student's card, or a teacher's recorded space), or ``{}``."""
    path = model_dir / CARD_FILE
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise EncoderError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(card, dict):
        raise EncoderError(f"{path} must be a JSON object")
    return card


def space_of(model_dir: Path) -> str:
    """The recorded space id (card or ``bundle.json``), else the one computed from the weights."""
    recorded = read_card(model_dir).get("space")
    if not recorded and (model_dir / BUNDLE_FILE).is_file():
        recorded = json.loads((model_dir / BUNDLE_FILE).read_text(encoding="utf-8")).get("space")
    return str(recorded or compute_space_id(model_dir))


def record_space(model_dir: Path, label: str | None = None) -> str:
    """Compute the id of a model that defines its own space and write it into its card."""
    card = read_card(model_dir)
    if "teacher" in card:
        raise EncoderError(f"{model_dir} is a student: it lives in its teacher's space")
    space = compute_space_id(model_dir, label)
    card.update(format=MODEL_CARD_FORMAT, space=space)
    text = json.dumps(card, indent=2, ensure_ascii=False) + "\n"
    (model_dir / CARD_FILE).write_text(text, encoding="utf-8")
    return space
