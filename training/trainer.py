"""The distillation loop: a student learns to put language X where the teacher put English.

Teacher embeddings come from the on-disk cache (no teacher forward while training); each step
runs the student on the other-language texts (and on the English ones when the objective needs
them) in one padded batch, and the objective pulls them onto the teacher rows. Everything that
decides the next step (weights, AdamW, schedule, DR queue, RNG, data position, GradScaler) is in
the checkpoint, so a resumed run continues bit-for-bit. Runs on one device or under ``torchrun``
(DDP: every rank computes the same global batch and takes its share; only rank 0 writes).

A run directory holds ``config.yaml`` (the resolved settings), ``metrics.jsonl`` (one line per
log step and per evaluation), ``checkpoint.pt`` (the latest resumable state) and ``student/``
(the best student on validation, or the last one without validation).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
from collections import Counter, defaultdict
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from safetensors.torch import save_file
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from polyclip.encoders.hub import resolve_model_dir
from polyclip.encoders.metrics import retrieval_metrics
from polyclip.encoders.sentence import SentenceEncoder, pool, transformer_layers
from polyclip.encoders.space import CARD_FILE
from polyclip.training.config import ConfigError, TrainConfig
from polyclip.training.data import (
    BatchStream,
    DataError,
    DataStats,
    Pair,
    default_data_dir,
    queue_anchors,
    read_pairs,
    token_lengths,
)
from polyclip.training.english import english_sources, read_english
from polyclip.training.heads import feature_cache, init_head_lstsq
from polyclip.training.losses import Targets, build_loss
from polyclip.training.retention import BaseReference
from polyclip.training.runtime import Dist, autocast_dtype, close_distributed, init_distributed
from polyclip.training.teacher_cache import TeacherCache

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
HEAD_INIT = "head_init.safetensors"  # the lstsq head the run started from
STATEFUL = ("optimizer", "scheduler", "loss", "scaler", "stream")  # checkpointed state_dicts
# Settings that may change between a checkpoint and its resumption without a warning.
RESUMABLE_CHANGES = {"max_steps", "epochs", "out", "device", "resume", "log_every", "eval_every",
                     "checkpoint_every", "patience", "eval_batch_size"}  # fmt: skip


@dataclass
class EarlyStopping:
    """Best validation score so far; ``stop`` after ``patience`` evaluations without a gain."""

    patience: int = 0
    best: float = -math.inf
    best_step: int = -1
    bad: int = 0

    def update(self, score: float, step: int) -> bool:
        """Record one evaluation; True when it is a new best (ties keep the earlier one)."""
        if score > self.best:
            self.best, self.best_step, self.bad = score, step, 0
            return True
        self.bad += 1
        return False

    @property
    def stop(self) -> bool:
        return self.patience > 0 and self.bad >= self.patience


class Trainer:
    """One distillation run, set up from a :class:`TrainConfig`; call :meth:`fit`."""

    def __init__(self, cfg: TrainConfig, ctx: Dist | None = None) -> None:
        self.cfg, self.ctx = cfg, ctx or init_distributed(cfg.device)
        self.out = cfg.out_dir
        self.dev = self.ctx.device
        shards = self.ctx.world * cfg.grad_accum
        if cfg.batch_size % shards:
            raise ConfigError(
                f"batch_size {cfg.batch_size} must divide into {self.ctx.world} "
                f"process(es) x {cfg.grad_accum} accumulation steps"
            )
        self._load_data()
        torch.manual_seed(cfg.seed)  # the same head on every rank (DDP also broadcasts it)
        self.student = SentenceEncoder.new_student(
            cfg.student, dimension=self.cache.dim, space=self.cache.space, teacher=cfg.teacher,
            pooling=cfg.pooling, head=cfg.head, prefixes={},  # type: ignore[arg-type]
            max_seq_length=cfg.max_seq_length, name=cfg.name, device=str(self.dev),
            head_hidden=cfg.head_hidden,
        )  # fmt: skip
        self.head_fit: dict[str, Any] = {}
        if cfg.head_init == "lstsq":
            self._fit_head()
        # The frozen base the preservation term compares with (the backbone as loaded).
        self.base_backbone = None
        if cfg.preserve_weight:
            self.base_backbone = copy.deepcopy(self.student.model.backbone).eval()
            self.base_backbone.requires_grad_(False)
        if cfg.lora_r:
            self._add_lora()
        torch.manual_seed(cfg.seed + self.ctx.rank)  # dropout differs between ranks
        self.loss = build_loss(
            cfg.loss, cfg.loss_weights or None, dim=self.cache.dim, queue_size=cfg.queue_size,
            reduction=cfg.mse_reduction, temperature=cfg.temperature, tau=cfg.tau,
            tau_teacher=cfg.tau_teacher, tau_student=cfg.tau_student,
        ).to(self.dev)  # fmt: skip
        if self.loss.dr is not None:
            queue = self.cache.get(self.queue_keys)
            self.loss.dr.init_queue(torch.from_numpy(queue).to(self.dev))
        tokens = token_lengths([p.text for p in self.pairs], self.student.tokenizer)
        if self.loss.needs_student_en:  # both sides share one padded pass
            tokens = np.maximum(
                tokens, token_lengths([p.en for p in self.pairs], self.student.tokenizer)
            )
        self.lengths = np.minimum(tokens, cfg.max_seq_length)
        self.stats.over_long = int((tokens > cfg.max_seq_length).sum())
        self._build_optimisation()
        self.step, self.wall_before = 0, 0.0
        self.early = EarlyStopping(cfg.patience)
        self.reference: BaseReference | None = None
        if self.ctx.main and self.val:
            self.reference = BaseReference(
                cfg.student, self.val, self.val_en, str(self.dev), cfg.eval_batch_size
            )

    # ---- setup -------------------------------------------------------------------------
    def _load_data(self) -> None:
        cfg = self.cfg
        self.data_dir = Path(cfg.data) if cfg.data else default_data_dir()
        pairs, self.stats = [], DataStats()
        if cfg.english_ratio < 1:
            pairs, self.stats = read_pairs(
                self.data_dir, cfg.train_split, cfg.languages, limit=cfg.train_max
            )
        pairs += self._broad_english(len(pairs))
        val: list[Pair] = []
        self.val_source = ""
        if cfg.val_split:
            source = Path(cfg.val_data) if cfg.val_data else self.data_dir
            langs = cfg.val_languages or cfg.languages
            val, _ = read_pairs(source, cfg.val_split, langs, limit=cfg.val_max)
            self.val_source = f"{source.name}/{cfg.val_split}"
        keys = [self._key(p) for p in pairs]
        self.queue_keys: list[str] = []
        if "dr" in {name.strip().lower() for name in cfg.loss.split("+")}:
            self.queue_keys = queue_anchors(keys, cfg.queue_size, cfg.seed, cfg.queue_data)
            if not cfg.queue_data:  # ConGen: queue anchors are held out of training
                held = set(self.queue_keys)
                pairs = [p for p, k in zip(pairs, keys, strict=True) if k not in held]
                keys = [self._key(p) for p in pairs]
                self.stats.pairs = Counter(p.lang for p in pairs)
                self.stats.broad_english = sum(p.en in self.broad for p in pairs)
        self.pairs = pairs
        resolve_model_dir(cfg.student)  # a wrong path fails now, not after the teacher pass
        val_keys = [self._key(p) for p in val]
        self.cache = self._open_cache()
        self._fill(self.cache, [*keys, *val_keys, *self.queue_keys])
        self.rows = self.cache.rows(keys)
        self.val: dict[str, tuple[list[str], np.ndarray]] = {}
        self.val_en: dict[str, list[str]] = {}
        for lang in cfg.val_languages or cfg.languages:
            subset = [p for p in val if p.lang == lang]
            if subset:
                anchors = [self._key(p) for p in subset]
                self.val[lang] = ([p.text for p in subset], self.cache.get(anchors))
                self.val_en[lang] = [p.en for p in subset]

    def _broad_english(self, parallel: int) -> list[Pair]:
        """English-only pairs (anchor = text) from ``english_data``: ``english_ratio`` of the
        stream, as many as needed beside ``parallel`` pairs (all of them at ratio 1)."""
        cfg = self.cfg
        self.broad: set[str] = set()
        if not cfg.english_data:
            return []
        sentences = read_english(
            english_sources(cfg.english_data), cfg.english_max, cfg.seed, cfg.english_exclude
        )
        ratio = cfg.english_ratio
        want = len(sentences) if ratio == 1 else round(ratio / (1 - ratio) * parallel)
        if want > len(sentences):
            log.warning(
                "english_ratio %.2f needs %d English sentences, %s has %d: the share is lower",
                ratio, want, cfg.english_data, len(sentences),
            )  # fmt: skip
            want = len(sentences)
        pick = np.random.default_rng(cfg.seed).permutation(len(sentences))[:want]
        self.stats.broad_english = want
        self.stats.pairs["en"] += want  # counted with the pairs, as after the DR hold-out
        self.broad = {sentences[i] for i in pick}
        return [Pair(sentences[i], sentences[i], "en") for i in sorted(pick)]

    def _fill(self, cache: TeacherCache, keys: list[str], desc: str = "teacher cache") -> None:
        """Every rank embeds its share of the missing keys, then all read every share."""
        if self.ctx.world > 1:
            dist.barrier()  # every rank opened the same snapshot of the cache
        cache.ensure(keys, rank=self.ctx.rank, world=self.ctx.world, desc=desc)
        if self.ctx.world > 1:
            dist.barrier()
            cache.refresh()

    def _fit_head(self) -> None:
        """Closed-form head: ridge from the base's pooled features of English anchors to the
        teacher rows (seeded sample of at most ``lstsq_max`` anchors; features cached)."""
        cfg = self.cfg
        anchors = list(dict.fromkeys(zip((p.en for p in self.pairs), self.rows, strict=True)))
        if cfg.lstsq_max and len(anchors) > cfg.lstsq_max:
            pick = np.random.default_rng(cfg.seed).choice(len(anchors), cfg.lstsq_max, False)
            anchors = [anchors[i] for i in sorted(pick)]
        texts = [t for t, _ in anchors]
        features = feature_cache(cfg.cache_dir, self.student, resolve_model_dir(cfg.student))
        self._fill(features, texts, "base features")
        targets = self.cache.take(np.array([r for _, r in anchors], dtype=np.int64))
        cosine = init_head_lstsq(self.student, features.get(texts), targets, cfg.ridge)
        self.head_fit = {"anchors": len(texts), "ridge": cfg.ridge, "fit_cosine": round(cosine, 4)}
        if self.ctx.main:  # the base's own head in the teacher's space, for WiSE-FT later
            self.out.mkdir(parents=True, exist_ok=True)
            dense = self.student.model.dense
            assert dense is not None
            head = {"weight": dense.weight.detach().cpu(), "bias": dense.bias.detach().cpu()}
            save_file({k: v.contiguous() for k, v in head.items()}, self.out / HEAD_INIT)

    def _open_cache(self) -> TeacherCache:
        cfg = self.cfg
        return TeacherCache.for_teacher(
            cfg.cache_dir, cfg.teacher, anchor=cfg.anchor,  # type: ignore[arg-type]
            prefix=cfg.teacher_prefix, device=str(self.dev), batch_size=cfg.eval_batch_size,
        )  # fmt: skip

    def _key(self, pair: Pair) -> str:
        if self.cfg.anchor == "text":
            return pair.en
        if pair.image is None:
            raise DataError(f"anchor 'image' needs an 'image' column; a pair has none: {pair}")
        return pair.image

    def _add_lora(self) -> None:
        """LoRA adapters on the backbone's linear layers; peft freezes everything else in it."""
        from peft import LoraConfig, get_peft_model

        cfg = self.cfg
        lora = LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_targets), bias="none",
        )  # fmt: skip
        self.student.model.backbone = get_peft_model(self.student.model.backbone, lora)

    def _build_optimisation(self) -> None:
        cfg, model = self.cfg, self.student.model
        if cfg.freeze_embeddings:
            model.backbone.get_input_embeddings().weight.requires_grad_(False)
        if cfg.freeze_backbone:
            model.backbone.requires_grad_(False)
        if cfg.freeze_layers:  # the whole embedding block: words, positions, types, LayerNorm
            backbone = model.backbone
            getattr(backbone, "embeddings", backbone.get_input_embeddings()).requires_grad_(False)
            layers = transformer_layers(backbone)
            if cfg.freeze_layers > len(layers):
                msg = f"freeze_layers {cfg.freeze_layers}: the backbone has {len(layers)} layers"
                raise ConfigError(msg)
            for layer in layers[: cfg.freeze_layers]:
                layer.requires_grad_(False)
        self.params = [p for p in model.parameters() if p.requires_grad]
        groups = [  # no weight decay on biases and LayerNorm weights, as BERT trains
            {"params": [p for p in self.params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in self.params if p.ndim < 2], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
        lengths = self.lengths if cfg.group_by_length else None
        self.stream = BatchStream(len(self.pairs), cfg.batch_size, cfg.seed, lengths)
        self.total_steps = cfg.max_steps or cfg.epochs * self.stream.steps_per_epoch
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, cfg.warmup_steps, self.total_steps
        )
        cuda = self.dev.type == "cuda"
        self.amp = autocast_dtype(cfg.precision, self.dev)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp is torch.float16)
        self.model: torch.nn.Module = model.train()
        if self.ctx.world > 1:  # the backbone's pooler is unused by mean pooling
            ids = [self.dev.index] if cuda else None
            self.model = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    # ---- training ----------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``max_steps`` / ``epochs`` or early stop; returns the run summary."""
        cfg, main = self.cfg, self.ctx.main
        resumed = cfg.resume and (self.out / CHECKPOINT).exists()
        if resumed:
            self._load_checkpoint()
        if main:
            self._start_run_dir(resumed)
        t0 = time.perf_counter()
        if self.val and self.step == 0:  # the untrained baseline, for the record; with no
            self._evaluate(select=self.total_steps == 0)  # steps at all, it is the student
        window: dict[str, float] = defaultdict(float)
        n, t_log, stop = 0, time.perf_counter(), False
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not main, unit="step")
        while self.step < self.total_steps and not stop:
            for key, value in self._step(self.stream.next()).items():
                window[key] += value
            self.step, n = self.step + 1, n + 1
            bar.update(1)
            last = self.step == self.total_steps
            if self.step % cfg.log_every == 0 or last:
                rate = n * cfg.batch_size / (time.perf_counter() - t_log)
                terms = {k: v / n for k, v in window.items()}
                shown = {k: f"{v:.4g}" for k, v in terms.items()}
                bar.set_postfix({**shown, "pairs/s": f"{rate:.0f}"})
                lr = self.scheduler.get_last_lr()[0]
                self._log({"type": "train", **terms, "lr": lr, "pairs_per_s": round(rate, 1)})
                window, n, t_log = defaultdict(float), 0, time.perf_counter()
            periodic = cfg.eval_every and self.step % cfg.eval_every == 0
            if self.val and (periodic or self.stream.epoch_done or last):
                stop = self._evaluate()
            if stop or last or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0):
                self._save_checkpoint(self.wall_before + time.perf_counter() - t0)
        bar.close()
        self.wall_before += time.perf_counter() - t0
        if main:
            if not self.val:
                self._save_student({}, {})
            self._finish_card(stopped_early=stop)
        return {
            "out": str(self.out),
            "steps": self.step,
            "best_step": self.early.best_step,
            "best_val_r@1": self.early.best if self.val else None,
            "wall_time_s": round(self.wall_before, 1),
        }

    def _step(self, idx: np.ndarray) -> dict[str, float]:
        """One optimizer step over a global batch: this rank's share in ``grad_accum`` parts."""
        cfg, accum = self.cfg, self.cfg.grad_accum
        # Every rank holds the teacher rows of the whole global batch: contrastive negatives
        # and DR's batch keys come from it; equal cache rows are one English anchor.
        z_all = torch.from_numpy(self.cache.take(self.rows[idx])).to(self.dev)
        anchors = torch.from_numpy(self.rows[idx]).to(self.dev)
        micro = np.arange(len(idx)).reshape(accum, self.ctx.world, -1)[:, self.ctx.rank]
        sums: dict[str, float] = defaultdict(float)
        for i, pos in enumerate(micro):
            quiet = self.ctx.world > 1 and i < accum - 1  # all-reduce on the last part only
            with self.model.no_sync() if quiet else nullcontext():  # type: ignore[operator]
                part = idx[pos]
                texts = [self.pairs[j].text for j in part]
                if self.loss.needs_student_en:  # one padded pass over both languages
                    texts += [self.pairs[j].en for j in part]
                unique = list(dict.fromkeys(texts))  # English-only pairs need one pass, not two
                where = {t: k for k, t in enumerate(unique)}
                batch = self.student.tokenize(unique)
                with torch.autocast(self.dev.type, dtype=self.amp, enabled=self.amp is not None):
                    z, pooled = self.model(**batch, return_pooled=True)
                    drift = self._drift(batch, pooled) if self.base_backbone is not None else None
                z = z.float()[torch.tensor([where[t] for t in texts], device=self.dev)]
                z_en = z[len(part) :] if self.loss.needs_student_en else None
                targets = Targets(z_all, anchors, torch.from_numpy(pos).to(self.dev))
                out = self.loss(targets, z[: len(part)], z_en)
                if drift is not None:
                    out["preserve"] = cfg.preserve_weight * drift
                    out["loss"] = out["loss"] + out["preserve"]
                self.scaler.scale(out["loss"] / accum).backward()
            for key, value in out.items():
                sums[key] += value.item() / accum
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.loss.dr is not None:  # every rank enqueues the whole global batch: same queue
            self.loss.dr.update_queue(z_all)
        return sums

    def _drift(self, batch: dict[str, torch.Tensor], pooled: torch.Tensor) -> torch.Tensor:
        """How far the pooled features moved from the frozen base's on the same texts:
        ``mean ‖p_s − p_base‖² / mean ‖p_base‖²`` (so λ does not depend on the feature scale)."""
        assert self.base_backbone is not None
        with torch.no_grad():
            hidden = self.base_backbone(**batch)[0]
            ref = pool(hidden, batch["attention_mask"], self.student.model.pooling).float()
        gap = (pooled.float() - ref).pow(2).sum(-1).mean()
        return gap / ref.pow(2).sum(-1).mean().clamp_min(1e-12)

    # ---- validation --------------------------------------------------------------------
    def _evaluate(self, *, select: bool = True) -> bool:
        """Mean R@1 of student(X) queries against teacher(anchor) documents; True = stop.

        With ``select`` the score takes part in best-model selection and early stopping.
        """
        stop = False
        if self.ctx.main:
            self.student.model.eval()
            scores, queries = {}, {}
            for lang, (texts, docs) in self.val.items():
                queries[lang] = self.student.encode(
                    texts, batch_size=self.cfg.eval_batch_size, show_progress=False
                )
                scores[lang] = retrieval_metrics(queries[lang], docs)
            self.student.model.train()
            r1 = float(np.mean([s["r@1"] for s in scores.values()]))
            flat = {f"{lang}_{k}": round(v, 4) for lang, s in scores.items() for k, v in s.items()}
            table = {}
            if self.reference is not None:
                table = self.reference.table(scores, queries, self.cfg.distilled_languages)
            kept = {"retention_" + k: v for k, v in table.get("mean", {}).items()}
            self._log({"type": "eval", "val_r@1": round(r1, 4), **flat, **kept})
            if select and self.early.update(r1, self.step):
                self._save_student({"val_r@1": r1, **flat}, table)
            stop = select and self.early.stop
        if self.ctx.world > 1:
            flag = [stop]
            dist.broadcast_object_list(flag, src=0)
            stop = flag[0]
        return stop

    # ---- outputs -----------------------------------------------------------------------
    def _log(self, record: dict[str, Any]) -> None:
        if not self.ctx.main:
            return
        line = {"step": self.step, "epoch": self.stream.progress, **record}
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def _start_run_dir(self, resumed: bool) -> None:
        """Write the resolved config; drop metrics past the checkpoint (a crash's leftovers)."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        metrics = self.out / "metrics.jsonl"
        kept = []
        if resumed and metrics.exists():
            lines = metrics.read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if json.loads(line)["step"] <= self.step]
        metrics.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        log.info("data %s: %s; DR queue anchors %d; teacher cache %s (%d rows)",
                 self.data_dir, self.stats.as_dict(), len(self.queue_keys), self.cache.dir,
                 len(self.cache))  # fmt: skip

    def _provenance(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "teacher": cfg.teacher,
            "teacher_space": self.cache.space,
            "head_init": {"kind": cfg.head_init, **self.head_fit},
            "trained_params": sum(p.numel() for p in self.params),
            "objective": cfg.loss,
            "weights": self.loss.weights,
            "data": str(self.data_dir),
            "data_stats": {**self.stats.as_dict(), "dr_queue_anchors": len(self.queue_keys)},
            "steps": self.step,  # of this student; steps_trained is the whole run
            "epochs": self.stream.progress,
            "seed": cfg.seed,
            "prefixes": "none: trained on raw text, so inference adds none either",
            "hyper_parameters": cfg.to_dict(),
        }

    def _save_student(self, val: dict[str, float], retention: dict[str, Any]) -> None:
        """Write the student as it is now to ``out/student`` (replaced whole, never half)."""
        tmp, final = self.out / "student.tmp", self.out / "student"
        shutil.rmtree(tmp, ignore_errors=True)
        provenance = {**self._provenance(), "val": val}
        kept = {self.val_source: retention} if retention else {}
        student = self.student
        if self.cfg.lora_r:  # save a copy with the adapters merged in; training goes on as is
            merged = copy.deepcopy(student.model)
            merged.backbone = merged.backbone.merge_and_unload()
            student = SentenceEncoder(merged, student.tokenizer, student.info, student.card)
        student.save(
            tmp, languages=self.cfg.distilled_languages, provenance=provenance, retention=kept
        )
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)

    def _finish_card(self, *, stopped_early: bool) -> None:
        """Add what is only known at the end (wall time, total steps) to the saved card."""
        path = self.out / "student" / CARD_FILE
        card = json.loads(path.read_text(encoding="utf-8"))
        done = {"steps_trained": self.step, "stopped_early": stopped_early}
        card["provenance"] |= {**done, "wall_time_s": round(self.wall_before, 1)}
        path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    # ---- checkpoints -------------------------------------------------------------------
    def _save_checkpoint(self, wall: float) -> None:
        rng = {"cpu": torch.get_rng_state()}
        if self.dev.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.dev)
        rngs = [rng]
        if self.ctx.world > 1:
            rngs = [None] * self.ctx.world
            dist.all_gather_object(rngs, rng)
        if not self.ctx.main:
            return
        state = {name: getattr(self, name).state_dict() for name in STATEFUL}
        state |= {"model": self.student.model.state_dict(), "early": asdict(self.early)}
        state |= {"step": self.step, "rng": rngs, "wall_s": wall, "config": self.cfg.to_dict()}
        tmp = self.out / f"{CHECKPOINT}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.out / CHECKPOINT)

    def _load_checkpoint(self) -> None:
        state = torch.load(self.out / CHECKPOINT, map_location="cpu", weights_only=True)
        changed = {k for k, v in state["config"].items() if getattr(self.cfg, k, v) != v}
        if changed - RESUMABLE_CHANGES:
            log.warning("resuming %s with changed settings: %s", self.out,
                        sorted(changed - RESUMABLE_CHANGES))  # fmt: skip
        self.student.model.load_state_dict(state["model"])
        for name in STATEFUL:
            getattr(self, name).load_state_dict(state[name])
        self.early = EarlyStopping(**{**state["early"], "patience": self.cfg.patience})
        rng = state["rng"][self.ctx.rank] if len(state["rng"]) > self.ctx.rank else state["rng"][0]
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and self.dev.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.dev)
        self.step, self.wall_before = int(state["step"]), float(state["wall_s"])
        log.info("resumed %s at step %d", self.out, self.step)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one configured training job; under torchrun, tear the process group down after."""
    ctx = init_distributed(cfg.device)
    if ctx.world == 1:
        return Trainer(cfg, ctx).fit()
    try:
        result = Trainer(cfg, ctx).fit()  # the trainer (and its DDP reducer) is freed here
    except BaseException:
        close_distributed(barrier=False)
        raise
    close_distributed()
    return result
