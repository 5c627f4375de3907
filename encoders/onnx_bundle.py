"""ONNX bundles: exported towers that encode through onnxruntime behind the common interface.

A bundle is a directory made by ``polyclip export``: ``bundle.json`` (what the service needs to
know: dimension, prefixes, embedding space, precision, parity figures), the tokenizer/processor
files and one graph per tower — ``model.onnx`` for the text tower, ``image.onnx`` for a dual
encoder's image tower. Pooling, projection head and L2 norm are inside the graphs, so a caller
only tokenizes (or preprocesses pixels) and runs the session.

Execution providers are picked here, not by callers: TensorRT and CUDA when this onnxruntime
has them and a GPU device is asked for, CPU otherwise — with a warning that names the provider
that really runs, since "ONNX silently on CPU" is a common complaint about other servers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from polyclip.encoders.base import EncoderInfo, ImageEncoder, TextEncoder, l2_normalize, pad_ids
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.space import BUNDLE_FILE

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "polyclip-onnx/1"
TOWER_FILES = {"text": "model.onnx", "image": "image.onnx"}
TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
ProviderList = list[str | tuple[str, dict[str, Any]]]


def is_bundle_dir(path: Path) -> bool:
    """True for a directory written by ``polyclip export`` (it has ``bundle.json``)."""
    return (path / BUNDLE_FILE).is_file()


def read_bundle(path: Path) -> dict[str, Any]:
    """The bundle description, checked for the one format this code reads."""
    try:
        meta = json.loads((path / BUNDLE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise EncoderError(f"{path / BUNDLE_FILE} is not a readable bundle description: {e}") from e
    if meta.get("format") != BUNDLE_FORMAT:
        raise EncoderError(
            f"{path}: bundle format {meta.get('format')!r} is not {BUNDLE_FORMAT!r}; re-export it"
        )
    return meta


@dataclass(frozen=True)
class RuntimeOptions:
    """How a bundle's sessions run; ``bundle.json`` holds the defaults chosen at export.

    The TensorRT fields map one to one onto the provider's options of the same name; profile
    shapes are onnxruntime strings such as ``input_ids:1x1,attention_mask:1x1``.
    """

    intra_op_threads: int = 0  # 0: onnxruntime's default (one thread per physical core)
    # Idle intra-op threads spin (onnxruntime's default) or sleep: spinning answers a burst a
    # little sooner and burns CPU between batches, which a server shares with its HTTP path.
    allow_spinning: bool = True
    tensorrt: bool = True  # use TensorRT when available (False: CUDA only; engines build slowly)
    trt_fp16: bool = True
    trt_engine_cache_dir: str = ""  # relative paths are inside the bundle
    trt_profile_min_shapes: str = ""
    trt_profile_opt_shapes: str = ""
    trt_profile_max_shapes: str = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RuntimeOptions:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def tensorrt_options(self, bundle_dir: Path, device_id: int) -> dict[str, Any]:
        """TensorRT provider options; engines are cached because building one takes minutes."""
        cache = Path(self.trt_engine_cache_dir or "trt_cache")
        opts: dict[str, Any] = {
            "device_id": device_id,
            "trt_fp16_enable": self.trt_fp16,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache if cache.is_absolute() else bundle_dir / cache),
        }
        for kind in ("min", "opt", "max"):
            shapes = getattr(self, f"trt_profile_{kind}_shapes")
            if shapes:
                opts[f"trt_profile_{kind}_shapes"] = shapes
        return opts


def _device_id(device: str) -> int:
    _, _, index = device.partition(":")
    if not index.isdigit() and index:
        raise EncoderError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    return int(index or 0)


def select_providers(
    available: Sequence[str],
    device: str = "cpu",
    runtime: RuntimeOptions | None = None,
    bundle_dir: Path = Path("."),
) -> ProviderList:
    """Execution providers for ``device``, best first, logging which one will run.

    ``cuda``/``cuda:N`` prefers TensorRT, then CUDA, each only when ``available`` (the list
    onnxruntime reports) has it, and always ends with CPU as onnxruntime's fallback.
    """
    if device == "cpu":
        gpu = [p for p in (TRT, CUDA) if p in available]
        if gpu:
            log.info("onnxruntime runs on %s (device=cpu) although %s is available", CPU, gpu[0])
        return [CPU]
    if not device.startswith("cuda"):
        raise EncoderError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    device_id = _device_id(device)
    runtime = runtime or RuntimeOptions()
    chosen: ProviderList = []
    if TRT in available and runtime.tensorrt:
        chosen.append((TRT, runtime.tensorrt_options(bundle_dir, device_id)))
    if CUDA in available:
        chosen.append((CUDA, {"device_id": device_id}))
    if not chosen:
        log.warning(
            "device=%s was asked for but this onnxruntime has no CUDA or TensorRT execution "
            "provider (available: %s): the bundle runs on %s. Install onnxruntime-gpu for GPUs.",
            device,
            ", ".join(available),
            CPU,
        )
    return [*chosen, CPU]


def _provider_name(p: str | tuple[str, dict[str, Any]]) -> str:
    return p if isinstance(p, str) else p[0]


def open_session(
    path: Path, providers: ProviderList, runtime: RuntimeOptions
) -> Any:  # onnxruntime.InferenceSession; typed Any so importing this module stays cheap
    """An inference session that warns when onnxruntime did not take the first provider."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = runtime.intra_op_threads
    opts.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if runtime.allow_spinning else "0"
    )
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:  # corrupt graph, missing kernel for this provider: one clear message
        raise EncoderError(f"onnxruntime cannot load {path}: {e}") from e
    runs, wanted = session.get_providers()[0], _provider_name(providers[0])
    if runs != wanted:
        log.warning("%s: %s was requested but onnxruntime runs it on %s", path.name, wanted, runs)
    else:
        log.info("%s runs on %s", path.name, runs)
    return session


class _Tower:
    """One tower's session plus the bundle facts its encoder needs."""

    def __init__(self, path: Path, kind: str, device: str, runtime: RuntimeOptions | None) -> None:
        import onnxruntime as ort

        self.meta = read_bundle(path)
        tower = self.meta.get("towers", {}).get(kind)
        if tower is None:
            raise EncoderError(f"bundle {path} has no {kind} tower (it has {self._kinds()})")
        runtime = runtime or RuntimeOptions.from_dict(self.meta.get("runtime", {}))
        # The tower's own TensorRT profile, unless the caller set one.
        profile = {
            f"trt_profile_{k}_shapes": shapes
            for k, shapes in tower.get("tensorrt_profile", {}).items()
            if not getattr(runtime, f"trt_profile_{k}_shapes")
        }
        self.runtime = replace(runtime, **profile)
        providers = select_providers(ort.get_available_providers(), device, self.runtime, path)
        self.session = open_session(path / tower["file"], providers, self.runtime)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.info = EncoderInfo(
            name=self.meta["name"],
            kind=kind,  # type: ignore[arg-type]
            dimension=int(self.meta["dimension"]),
            max_seq_length=int(self.meta.get("max_seq_length", 0)) if kind == "text" else 0,
            prefixes=dict(self.meta.get("prefixes", {})),
            space=self.meta.get("space", ""),
            legacy_space=self.meta.get("legacy_space", ""),
        )
        self.tower = tower

    def _kinds(self) -> str:
        return ", ".join(self.meta.get("towers", {})) or "none"

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {k: feed[k] for k in self.inputs})[0]


class OnnxTextEncoder(TextEncoder):
    """A bundle's text tower: tokenize as the source model did, run the graph."""

    def __init__(
        self, path: Path, *, device: str = "cpu", runtime: RuntimeOptions | None = None
    ) -> None:
        from transformers import AutoTokenizer

        self.graph = _Tower(path, "text", device, runtime)
        self.info = self.graph.info
        self.card = dict(self.graph.meta.get("card") or {})
        self.padding: str | bool = self.graph.tower.get("padding", "longest")
        self.tokenizer = AutoTokenizer.from_pretrained(path)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(
            texts,
            padding=self.padding,
            truncation=True,
            max_length=self.info.max_seq_length,
            return_tensors="np",
        )
        return self.graph.run({k: np.asarray(v, dtype=np.int64) for k, v in batch.items()})

    def tokenize_each(self, texts: Sequence[str]) -> list[list[int]]:
        limit = self.info.max_seq_length
        return self.tokenizer(list(texts), truncation=True, max_length=limit)["input_ids"]

    def encode_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        length = self.info.max_seq_length if self.padding == "max_length" else None
        input_ids, mask = pad_ids(ids, self.tokenizer.pad_token_id or 0, length)
        feed = {"input_ids": input_ids, "attention_mask": mask}
        feed["token_type_ids"] = np.zeros_like(input_ids)  # for graphs that take them
        return l2_normalize(self.graph.run(feed))


class OnnxImageEncoder(ImageEncoder):
    """A bundle's image tower: the source model's image processor, then the graph."""

    def __init__(
        self, path: Path, *, device: str = "cpu", runtime: RuntimeOptions | None = None
    ) -> None:
        from transformers import AutoImageProcessor

        self.graph = _Tower(path, "image", device, runtime)
        self.info = self.graph.info
        self.processor = AutoImageProcessor.from_pretrained(path)

    def _encode_batch(self, images: list[Image.Image]) -> np.ndarray:
        pixels = self.processor(images=images, return_tensors="np")["pixel_values"]
        return self.graph.run({"pixel_values": np.asarray(pixels, dtype=np.float32)})


def load_bundle(
    path: Path, *, device: str = "cpu", runtime: RuntimeOptions | None = None, **overrides: Any
) -> tuple[OnnxTextEncoder | None, OnnxImageEncoder | None]:
    """Every tower a bundle holds; ``overrides`` replace single runtime fields (threads, ...)."""
    meta = read_bundle(path)
    runtime = runtime or RuntimeOptions.from_dict(meta.get("runtime", {}))
    runtime = replace(runtime, **overrides)
    towers = meta.get("towers", {})
    text = OnnxTextEncoder(path, device=device, runtime=runtime) if "text" in towers else None
    image = OnnxImageEncoder(path, device=device, runtime=runtime) if "image" in towers else None
    return text, image
