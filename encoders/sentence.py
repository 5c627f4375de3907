"""Sentence-transformers-format text encoders: the text-only teachers and every student.

One model class covers both, composed as sentence-transformers does it (Transformer → Pooling →
optional Dense → Normalize) and saved in the same folder layout (``modules.json``), so a polyclip
student also loads with ``SentenceTransformer(path)``. A student adds ``polyclip.json``: the
teacher whose space it lives in, its languages and how it was trained.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from polyclip.encoders.base import EncoderInfo, TextEncoder, l2_normalize, pad_ids
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.hub import resolve_model_dir
from polyclip.encoders.space import CARD_FILE, compute_space_id, read_card

Pooling = Literal["mean", "cls", "max"]
Head = Literal["linear", "tanh", "none"]
_ST = "sentence_transformers.models."
# Legacy (sentence-transformers < 6) pooling keys, as every published ST folder still has them.
_POOL_KEYS = {
    "cls_token": "cls",
    "mean_tokens": "mean",
    "max_tokens": "max",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
}
_ACTIVATIONS = {"torch.nn.modules.activation.Tanh": "tanh", "torch.nn.modules.linear.Identity": ""}


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: Pooling) -> torch.Tensor:
    """Pool token states; mean is masked so padding never leaks into the embedding."""
    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def transformer_layers(backbone: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers of a BERT/XLM-R/MPNet (``encoder.layer``) or
    DistilBERT (``transformer.layer``) backbone, bottom first."""
    for path in ("encoder.layer", "transformer.layer"):
        module: Any = backbone
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise EncoderError(f"no transformer layer stack found in {type(backbone).__name__}")


class SentenceModel(nn.Module):
    """Backbone + pooling + optional projection head; returns the embedding before L2 norm.

    The head is ``dense`` (with a tanh or no activation), optionally after a hidden layer
    ``hidden`` with tanh (an MLP head): sentence-transformers ``Dense`` modules, one each.
    Training losses want the raw head output (FD/ED regress it onto the teacher); inference and
    export add the L2 norm on top.
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        pooling: Pooling = "mean",
        dense: nn.Linear | None = None,
        tanh: bool = False,
        hidden: nn.Linear | None = None,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "cls", "max"):
            raise EncoderError(f"pooling must be mean, cls or max, got {pooling!r}")
        if hidden is not None and dense is None:
            raise EncoderError("an MLP head needs its output layer")
        self.backbone = backbone
        self.pooling: Pooling = pooling
        self.hidden = hidden
        self.dense = dense
        self.activation = nn.Tanh() if tanh else nn.Identity()

    @property
    def dimension(self) -> int:
        if self.dense is not None:
            return self.dense.out_features
        return self.backbone.config.hidden_size

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled output, before any head."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask)[0]
        return pool(hidden, attention_mask, self.pooling)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        if self.hidden is not None:
            x = torch.tanh(self.hidden(x))
        if self.dense is not None:
            x = self.activation(self.dense(x))
        return x

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, return_pooled: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The head's output; with ``return_pooled`` also the pooled features under it."""
        pooled = self.pooled(input_ids, attention_mask)
        out = self.head(pooled)
        return (out, pooled) if return_pooled else out


class SentenceEncoder(TextEncoder):
    """A :class:`SentenceModel` with its tokenizer, behind the :class:`TextEncoder` interface."""

    def __init__(
        self,
        model: SentenceModel,
        tokenizer: PreTrainedTokenizerBase,
        info: EncoderInfo,
        card: dict[str, Any] | None = None,
        device: str = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.info = info
        self.card = card or {}
        self.device = device

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, ref: str | Path, *, device: str = "cpu") -> SentenceEncoder:
        """Load a sentence-transformers folder (teacher) or a polyclip student directory."""
        path = resolve_model_dir(ref)
        modules = _read_modules(path)
        types = [m["type"].removeprefix(_ST).rsplit(".", 1)[-1] for m in modules]
        if not types or types[0] != "Transformer":
            raise EncoderError(f"{path}: modules.json must start with a Transformer module")
        tf_dir = path / modules[0].get("path", "")
        backbone, tokenizer = _load_backbone(tf_dir)
        pooling: Pooling = "mean"
        denses: list[tuple[nn.Linear, bool]] = []
        for mod, kind in zip(modules[1:], types[1:], strict=True):
            mdir = path / mod["path"]
            if kind == "Pooling":
                pooling = _read_pooling(mdir)
            elif kind == "Dense":
                denses.append(_read_dense(mdir))
            elif kind != "Normalize":  # outputs are always L2-normalised by TextEncoder
                raise EncoderError(f"{path}: unsupported sentence-transformers module {kind!r}")
        if len(denses) > 2 or (len(denses) == 2 and not denses[0][1]):
            raise EncoderError(f"{path}: heads of one Dense, or tanh-Dense then Dense, are read")
        hidden = denses[0][0] if len(denses) == 2 else None
        dense, tanh = denses[-1] if denses else (None, False)
        model = SentenceModel(backbone, pooling, dense, tanh, hidden)
        card = read_card(path)
        student = "teacher" in card  # a student lives in its teacher's space
        st_cfg = _read_json(path / "config_sentence_transformers.json", missing_ok=True)
        prefixes = dict(st_cfg.get("prompts") or {})
        if "document" in prefixes and "passage" not in prefixes:
            prefixes["passage"] = prefixes.pop("document")
        prefixes.update(card.get("prefixes", {}))
        max_len = _max_seq_length(path / modules[0].get("path", ""), backbone, tokenizer)
        info = EncoderInfo(
            name=card.get("name", path.name),
            kind="text",
            dimension=model.dimension,
            max_seq_length=card.get("max_seq_length", max_len),
            prefixes={k: v for k, v in prefixes.items() if k in ("query", "passage")},
            space=card.get("space") or compute_space_id(path),
            legacy_space="" if student else path.name,
        )
        return cls(model, tokenizer, info, card, device)

    @classmethod
    def new_student(
        cls,
        backbone_ref: str | Path,
        *,
        dimension: int,
        space: str,
        teacher: str,
        pooling: Pooling = "mean",
        head: Head = "linear",
        prefixes: dict[str, str] | None = None,
        max_seq_length: int = 128,
        name: str = "student",
        device: str = "cpu",
        head_hidden: int = 0,
    ) -> SentenceEncoder:
        """A fresh student: a pretrained backbone plus a new head into the teacher's space
        (``head_hidden`` > 0: an MLP head with that many tanh units)."""
        path = resolve_model_dir(backbone_ref)
        tf_dir = path
        if (path / "modules.json").exists():  # an ST folder: take its Transformer and prompts
            tf_dir = path / _read_modules(path)[0].get("path", "")
            st_cfg = _read_json(path / "config_sentence_transformers.json", missing_ok=True)
            prefixes = prefixes if prefixes is not None else st_cfg.get("prompts")
        backbone, tokenizer = _load_backbone(tf_dir)
        max_seq_length = min(max_seq_length, _max_seq_length(tf_dir, backbone, tokenizer))
        hidden = backbone.config.hidden_size
        if head == "none" and hidden != dimension:
            raise EncoderError(
                f"head 'none' needs the backbone width ({hidden}) to equal the teacher's "
                f"dimension ({dimension}); use head 'linear' or 'tanh'"
            )
        if head == "none" and head_hidden:
            raise EncoderError("head 'none' has no layers to put a hidden layer before")
        pre = nn.Linear(hidden, head_hidden) if head_hidden else None
        dense = None if head == "none" else nn.Linear(head_hidden or hidden, dimension)
        model = SentenceModel(backbone, pooling, dense, tanh=head == "tanh", hidden=pre)
        card = {
            "format": "polyclip-student/1",
            "name": name,
            "backbone": str(backbone_ref),
            "pooling": pooling,
            "head": head,
            "head_hidden": head_hidden,
            "dimension": dimension,
            "max_seq_length": max_seq_length,
            "prefixes": dict(prefixes or {}),
            "teacher": teacher,
            "space": space,
            "languages": [],
            "provenance": {},
        }
        info = EncoderInfo(name, "text", dimension, max_seq_length, card["prefixes"], space)
        return cls(model, tokenizer, info, card, device)

    # ---- saving --------------------------------------------------------------------------
    def save(self, out: str | Path, **card_updates: Any) -> Path:
        """Write a sentence-transformers folder plus ``polyclip.json`` (the student card)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.model.backbone.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        _portable_tokenizer_class(out / "tokenizer_config.json")
        modules = [{"idx": 0, "name": "0", "path": "", "type": _ST + "Transformer"}]
        dim = self.model.backbone.config.hidden_size
        pool_cfg = {"word_embedding_dimension": dim}
        for key, mode in _POOL_KEYS.items():
            pool_cfg[f"pooling_mode_{key}"] = mode == self.model.pooling
        _write_module(out, modules, "Pooling", pool_cfg)
        if self.model.hidden is not None:
            _write_dense(out, modules, self.model.hidden, tanh=True)
        if self.model.dense is not None:
            tanh = isinstance(self.model.activation, nn.Tanh)
            _write_dense(out, modules, self.model.dense, tanh=tanh)
        _write_module(out, modules, "Normalize", None)
        _write_json(out / "modules.json", modules)
        st_bert = {"max_seq_length": self.info.max_seq_length, "do_lower_case": False}
        if getattr(self.model.backbone, "pooler", False) is None:  # saved without a pooler
            st_bert["model_args"] = {"add_pooling_layer": False}
        _write_json(out / "sentence_bert_config.json", st_bert)
        st_cfg = {"prompts": self.info.prefixes, "similarity_fn_name": "cosine"}
        _write_json(out / "config_sentence_transformers.json", st_cfg)
        if self.card or card_updates:
            self.card.update(card_updates)
            _write_json(out / CARD_FILE, self.card)
        return out

    # ---- inference -----------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pad to the longest text, truncate to the model's max length, move to its device."""
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.info.max_seq_length,
            return_tensors="pt",
        )
        return {k: batch[k].to(self.device) for k in ("input_ids", "attention_mask")}

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            return self.model(**self.tokenize(texts)).float().cpu().numpy()

    def tokenize_each(self, texts: Sequence[str]) -> list[list[int]]:
        limit = self.info.max_seq_length
        return self.tokenizer(list(texts), truncation=True, max_length=limit)["input_ids"]

    def encode_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        input_ids, mask = pad_ids(ids, self.tokenizer.pad_token_id or 0)
        batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
        with torch.inference_mode():
            rows = self.model(**{k: v.to(self.device) for k, v in batch.items()})
        return l2_normalize(rows.float().cpu().numpy())


# ---- folder helpers -----------------------------------------------------------------------
def _read_json(path: Path, *, missing_ok: bool = False) -> Any:
    if missing_ok and not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise EncoderError(f"missing file {path}") from e
    except json.JSONDecodeError as e:
        raise EncoderError(f"{path} is not valid JSON: {e}") from e


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _portable_tokenizer_class(path: Path) -> None:
    """transformers 5 writes ``TokenizersBackend``, a class transformers 4 cannot load; the
    fast-tokenizer base class reads the same ``tokenizer.json`` in both."""
    cfg = _read_json(path, missing_ok=True)
    if cfg.get("tokenizer_class") == "TokenizersBackend":
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        _write_json(path, cfg)


def _write_module(out: Path, modules: list[dict], kind: str, cfg: dict | None) -> Path:
    idx = len(modules)
    mdir = out / f"{idx}_{kind}"
    mdir.mkdir(exist_ok=True)
    if cfg is not None:
        _write_json(mdir / "config.json", cfg)
    modules.append({"idx": idx, "name": str(idx), "path": mdir.name, "type": _ST + kind})
    return mdir


def _write_dense(out: Path, modules: list[dict], layer: nn.Linear, *, tanh: bool) -> None:
    """One sentence-transformers ``Dense`` module: config and safetensors weights."""
    act = "activation.Tanh" if tanh else "linear.Identity"
    cfg = {
        "in_features": layer.in_features,
        "out_features": layer.out_features,
        "bias": layer.bias is not None,
        "activation_function": f"torch.nn.modules.{act}",
    }
    ddir = _write_module(out, modules, "Dense", cfg)
    weights = {"linear.weight": layer.weight.detach().cpu().contiguous()}
    if layer.bias is not None:
        weights["linear.bias"] = layer.bias.detach().cpu().contiguous()
    save_file(weights, ddir / "model.safetensors")


def _read_modules(path: Path) -> list[dict[str, Any]]:
    if not (path / "modules.json").exists():
        # A bare transformers directory: mean pooling, as M-CLIP and e5 use.
        if (path / "config.json").exists():
            return [{"path": "", "type": _ST + "Transformer"}]
        raise EncoderError(
            f"{path} is not a model directory (no modules.json or config.json); "
            "expected a sentence-transformers folder, a polyclip student or a transformers model"
        )
    modules = _read_json(path / "modules.json")
    if not isinstance(modules, list):
        raise EncoderError(f"{path}/modules.json must be a list of modules")
    return modules


def _load_backbone(tf_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    # sentence-transformers' model_args (e.g. add_pooling_layer=False for a BERT saved without
    # its unused pooler) keep transformers from adding random, never-used weights.
    model_args = _read_json(tf_dir / "sentence_bert_config.json", missing_ok=True)
    try:
        backbone = AutoModel.from_pretrained(tf_dir, **model_args.get("model_args", {}))
        tokenizer = AutoTokenizer.from_pretrained(tf_dir)
    except Exception as e:  # corrupt weights raise SafetensorError, bad configs ValueError, ...
        raise EncoderError(f"cannot load a transformers model from {tf_dir}: {e}") from e
    return backbone, tokenizer


def _read_pooling(mdir: Path) -> Pooling:
    cfg = _read_json(mdir / "config.json", missing_ok=True)
    if "pooling_mode" in cfg:  # sentence-transformers >= 6
        mode = cfg["pooling_mode"]
        mode = mode[0] if isinstance(mode, list) and len(mode) == 1 else mode
    else:
        active = [mode for key, mode in _POOL_KEYS.items() if cfg.get(f"pooling_mode_{key}")]
        mode = active[0] if len(active) == 1 else "+".join(active) or "none"
    if mode not in ("mean", "cls", "max"):
        raise EncoderError(f"{mdir}: unsupported pooling {mode!r} (mean, cls or max)")
    return mode


def _read_dense(mdir: Path) -> tuple[nn.Linear, bool]:
    cfg = _read_json(mdir / "config.json")
    act = cfg.get("activation_function", "torch.nn.modules.activation.Tanh")
    if act not in _ACTIVATIONS:
        raise EncoderError(f"{mdir}: unsupported Dense activation {act!r}")
    linear = nn.Linear(cfg["in_features"], cfg["out_features"], bias=cfg.get("bias", True))
    if (mdir / "model.safetensors").exists():
        state = load_file(mdir / "model.safetensors")
    elif (mdir / "pytorch_model.bin").exists():
        state = torch.load(mdir / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise EncoderError(f"{mdir}: Dense weights missing (model.safetensors)")
    linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
    return linear, _ACTIVATIONS[act] == "tanh"


def _max_seq_length(tf_dir: Path, backbone: PreTrainedModel, tok: PreTrainedTokenizerBase) -> int:
    """sentence_bert_config.json wins; else the smaller of tokenizer and position limits."""
    cfg = _read_json(tf_dir / "sentence_bert_config.json", missing_ok=True)
    if cfg.get("max_seq_length"):
        return int(cfg["max_seq_length"])
    positions = getattr(backbone.config, "max_position_embeddings", 512)
    if getattr(backbone.config, "model_type", "") in ("xlm-roberta", "roberta", "camembert"):
        positions -= 2  # RoBERTa-family position ids start after the padding index
    return int(min(positions, tok.model_max_length or positions))
