"""The training configuration: one flat dataclass, filled from a YAML recipe, then CLI overrides.

nanoGPT style: every knob is a field with a default here, a recipe (``training/recipes/*.yaml``)
sets the ones it cares about, and ``--set key=value`` (or a named flag) wins over both.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from polyclip.encoders.errors import PolyclipError

RECIPES_DIR = Path(__file__).parent / "recipes"
CHOICES = {
    "anchor": ("text", "image"),
    "teacher_prefix": ("", "query", "passage"),
    "pooling": ("mean", "cls", "max"),
    "head": ("linear", "tanh", "none"),
    "precision": ("fp32", "fp16", "bf16", "auto"),
    "mse_reduction": ("sum", "mean"),
    "head_init": ("random", "lstsq"),
}


OBJECTIVES = ("fd", "ed", "sd", "mcl", "dr")  # polyclip.training.losses implements each


class ConfigError(PolyclipError):
    """A recipe or override that cannot be used; the message names the key."""


def parse_objectives(spec: str, weights: dict[str, float] | None = None) -> list[str]:
    """The objective names of ``spec`` (``"dr+fd"``, case-insensitive), checked with ``weights``.

    Checked when the config is made, so a typo fails in one line before any teacher pass.
    """
    names = list(dict.fromkeys(part.strip().lower() for part in spec.split("+")))
    for name in [*names, *(weights or {})]:
        if name not in OBJECTIVES:
            raise ConfigError(
                f"loss: unknown objective {name!r}; valid names: {', '.join(OBJECTIVES)} "
                "(or a sum such as dr+fd)"
            )
    for name, weight in (weights or {}).items():
        if not isinstance(weight, int | float) or isinstance(weight, bool) or weight < 0:
            raise ConfigError(f"loss_weights.{name} must be a number >= 0, got {weight!r}")
    return names


@dataclass
class TrainConfig:
    """Every setting of one distillation run; defaults are the paper's FD setting."""

    name: str = "run"
    # models and data
    teacher: str = "artifacts/models/all-mpnet-base-v2"
    student: str = "artifacts/models/multilingual-e5-small"
    data: str = ""  # "" = polyclip.training.data.default_data_dir() (Multi30k)
    languages: list[str] = field(default_factory=lambda: ["de", "fr", "cs"])
    train_split: str = "train"
    train_max: int = 0  # first N pairs per language (0 = all)
    val_data: str = ""  # "" = same as data; with val_split "" there is no validation
    val_split: str = "val"
    val_max: int = 0  # first N captions per language for validation (0 = all)
    val_languages: list[str] = field(default_factory=list)  # [] = languages; may add held-out ones
    queue_data: str = ""  # DR queue anchors, one per line; "" = hold K out of the train split
    english_data: list[str] = field(default_factory=list)  # broad English sources (english.py)
    english_ratio: float = 0.0  # share of training pairs that are broad English (anchor only)
    english_max: int = 0  # at most N broad English sentences (equal shares per source; 0 = all)
    english_exclude: list[str] = field(default_factory=list)  # never trained: what checks read
    out: str = ""  # "" = artifacts/runs/<name>
    cache_dir: str = "artifacts/teacher_cache"
    anchor: str = "text"  # what the teacher embeds: the English text, or the pair's image
    teacher_prefix: str = ""  # teacher prefix for English anchors (e.g. "passage" for e5)
    # student
    pooling: str = "mean"
    head: str = "linear"
    max_seq_length: int = 128
    freeze_embeddings: bool = False  # on CPU e5-small's 96M-param embedding dominates AdamW
    freeze_backbone: bool = False  # train the head only (the backbone stays the base's)
    freeze_layers: int = 0  # keep the embeddings and the bottom N transformer layers fixed
    head_hidden: int = 0  # > 0: an MLP head (Dense → tanh → Dense) with this many hidden units
    lora_r: int = 0  # > 0: train LoRA adapters of this rank (merged into the weights on save)
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"])
    preserve_weight: float = 0.0  # λ: keep pooled features near the frozen base's (relative L2)
    head_init: str = "random"  # lstsq: closed-form ridge from base features to the teacher
    ridge: float = 1e-2  # lstsq: λ, relative to the mean eigenvalue of the feature covariance
    lstsq_max: int = 20000  # lstsq: English anchors it is fitted on (0 = all)
    # objective (each value goes only to the objectives that take it)
    loss: str = "fd"
    loss_weights: dict[str, float] = field(default_factory=dict)
    mse_reduction: str = "sum"  # FD/ED: sum over dimensions (eqs. 1-2) or mean (ST's MSELoss)
    temperature: float = 1.0  # SD
    tau: float = 0.05  # MCL
    queue_size: int = 65536  # DR
    tau_teacher: float = 0.05  # DR
    tau_student: float = 0.07  # DR
    # optimisation
    epochs: int = 3
    max_steps: int = 0  # optimizer steps; 0 = epochs decide
    batch_size: int = 64  # pairs per optimizer step over all GPUs and accumulation
    grad_accum: int = 1
    lr: float = 1e-5
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    max_grad_norm: float = 1.0
    seed: int = 42
    precision: str = "fp32"  # bf16 autocast on CUDA or a bf16 CPU; fp16 on CUDA only; auto
    group_by_length: bool = False  # batches of similar length: less padding, faster steps
    device: str = "auto"
    # bookkeeping
    log_every: int = 10
    eval_every: int = 0  # steps; 0 = only at each epoch end
    checkpoint_every: int = 500
    patience: int = 0  # evaluations without improvement before stopping (0 = never stop)
    eval_batch_size: int = 64
    resume: bool = True  # continue from out/checkpoint.pt when it exists

    @property
    def distilled_languages(self) -> list[str]:
        """Languages of the parallel pairs trained on: none when every pair is broad English or
        no step is taken (a least-squares head alone is fitted on English anchors)."""
        untrained = self.max_steps == 0 and self.epochs == 0
        return [] if self.english_ratio >= 1 or untrained else list(self.languages)

    def __post_init__(self) -> None:
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        positive = ("batch_size", "grad_accum", "max_seq_length", "log_every", "eval_batch_size")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.epochs < 1 and self.max_steps < 1 and self.head_init != "lstsq":
            raise ConfigError("set epochs or max_steps to at least 1 (0 only with head_init lstsq)")
        if self.head_init == "lstsq" and self.head == "none":
            raise ConfigError("head_init lstsq fits a head: use head linear or tanh")
        if self.head_init == "lstsq" and self.head_hidden:
            raise ConfigError("head_init lstsq fits a linear head; an MLP head starts random")
        if not 0.0 <= self.english_ratio <= 1.0:
            raise ConfigError(f"english_ratio must be in [0, 1], got {self.english_ratio}")
        if bool(self.english_data) != (self.english_ratio > 0):
            raise ConfigError("english_data and english_ratio > 0 go together (sources and share)")
        for key in ("freeze_layers", "head_hidden", "lora_r", "english_max", "lstsq_max"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.preserve_weight < 0:
            raise ConfigError(f"preserve_weight must be >= 0, got {self.preserve_weight}")
        if self.lora_r and (self.freeze_backbone or self.freeze_layers):
            raise ConfigError("lora_r trains adapters on a frozen backbone: no freeze_* with it")
        if not self.languages:
            raise ConfigError("languages must name at least one language")
        parse_objectives(self.loss, self.loss_weights)

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"artifacts/runs/{self.name}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def resolve_recipe(ref: str | Path) -> Path:
    """A recipe path, or a bare name (``default``) for one shipped in ``training/recipes``."""
    path = Path(ref)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{ref}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    raise ConfigError(f"recipe not found: {ref} (shipped recipes: {', '.join(names)})")


def _coerce(key: str, value: Any) -> Any:
    """Check ``value`` against the field's default type; a CLI string list becomes a list."""
    if key not in FIELDS:
        raise ConfigError(f"unknown setting {key!r}; valid: {', '.join(FIELDS)}")
    f = FIELDS[key]
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if value is None:
        return default
    if isinstance(default, list) and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(default, float) and not isinstance(value, bool):
        with contextlib.suppress(TypeError, ValueError):  # YAML 1.1 reads 1e-5 as a string
            value = float(value)
    if isinstance(default, str) and isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if type(value) is not type(default):
        raise ConfigError(f"{key} must be {type(default).__name__}, got {value!r}")
    return value


def load_config(recipe: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults ← recipe YAML ← overrides; ``name`` defaults to the recipe's file name."""
    values: dict[str, Any] = {}
    if recipe is not None:
        path = resolve_recipe(recipe)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must be a mapping of settings")
        values = {"name": path.stem}
        try:
            values |= {k: _coerce(k, v) for k, v in loaded.items()}
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
    values |= {k: _coerce(k, v) for k, v in (overrides or {}).items()}
    return TrainConfig(**values)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` with a YAML value (``lr=3e-4``, ``languages=[de,fr]``, ``resume=false``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"{key}: cannot parse {raw!r}") from e
