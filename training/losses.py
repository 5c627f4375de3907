"""Distillation objectives that pull a multilingual student into a teacher's embedding space.

One ``nn.Module`` per objective (FD, ED, SD, MCL, DR, as compared in arXiv 2510.26271), each
returning a dict of named loss terms, and :func:`build_loss` which combines them by name, e.g.
``build_loss("dr+fd", dim=512)``. Every objective takes the same three inputs, B rows of width D:

- ``z_t``: the teacher embedding of the English anchor; it is a target, so it is always detached.
  Either a ``(B, D)`` tensor or a :class:`Targets`: the teacher rows of the whole *global* batch
  (all DDP ranks, all accumulation steps), which of them are this pass's positives, and which
  rows share an English anchor. Contrastive objectives take their negatives (MCL) and current
  batch keys (DR) from the global batch, and never count another copy of a row's own anchor
  (the same English caption paired with its German and French translations) as a negative;
- ``z_s_x``: the student embedding of the other-language text;
- ``z_s_en``: the student embedding of the English text, only for objectives with
  ``needs_student_en`` (for the others the trainer can skip that forward pass).

Student embeddings are raw (projection-head output, not normalised); each objective normalises
where its paper does.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyclip.training.config import parse_objectives

Reduction = Literal["sum", "mean"]


@dataclass(frozen=True)
class Targets:
    """The teacher side of one student pass.

    ``z`` holds the teacher rows of the global batch (G, D); ``pos`` says which of them are this
    pass's B positives, in order; rows with equal ``anchors`` share one English anchor.
    """

    z: Tensor
    anchors: Tensor
    pos: Tensor

    @classmethod
    def local(cls, z_t: Tensor, anchors: Tensor | None = None) -> Targets:
        """A batch that is its own global batch (one device, no accumulation)."""
        rows = torch.arange(len(z_t), device=z_t.device)
        return cls(z_t.detach(), rows if anchors is None else anchors.to(z_t.device), rows)

    @property
    def rows(self) -> Tensor:
        """The positives, (B, D)."""
        return self.z[self.pos]

    def same_anchor(self) -> Tensor:
        """(B, G) bool: column j is another row of positive i's own anchor (a false negative)."""
        same = self.anchors[self.pos][:, None] == self.anchors[None, :]
        same[torch.arange(len(self.pos), device=same.device), self.pos] = False
        return same


class DistillationLoss(nn.Module):
    """Base class: a per-student ``term`` against the teacher, averaged over the student passes.

    Subclasses implement ``term``; ``prepare`` turns the teacher batch into whatever ``term``
    needs, once per step, so objectives using both student passes do not redo that work.
    """

    name: ClassVar[str]
    needs_student_en: ClassVar[bool] = False

    def prepare(self, targets: Targets) -> Any:
        return targets.rows

    def term(self, z_s: Tensor, target: Any) -> Tensor:
        raise NotImplementedError

    def combine(self, x: Tensor, en: Tensor) -> dict[str, Tensor]:
        return {self.name: (x + en) / 2}

    def forward(
        self, z_t: Tensor | Targets, z_s_x: Tensor, z_s_en: Tensor | None = None
    ) -> dict[str, Tensor]:
        targets = z_t if isinstance(z_t, Targets) else Targets.local(z_t)
        target = self.prepare(targets)
        x = self.term(z_s_x, target)
        if not self.needs_student_en:
            return {self.name: x}
        if z_s_en is None:
            raise ValueError(f"the {self.name!r} objective needs the English student embedding")
        return self.combine(x, self.term(z_s_en, target))


class FeatureDistillationLoss(DistillationLoss):
    """FD: ``‖z_s_x − z_t‖²``, summed over the D dimensions, mean over the batch (eq. 1).

    Reimers & Gurevych 2020, "Making monolingual sentence embeddings multilingual using
    knowledge distillation", on raw (unnormalised) embeddings. ``reduction="mean"`` also averages
    over the dimensions, as sentence-transformers' ``MSELoss`` and ``F.mse_loss`` do: the same
    minimum at 1/D of the scale, which matters little for FD alone under AdamW but gives FD
    1/D of its intended weight in a sum such as DR+FD.
    """

    name = "fd"

    def __init__(self, reduction: Reduction = "sum") -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.reduction = reduction

    def term(self, z_s: Tensor, target: Tensor) -> Tensor:
        if self.reduction == "mean":
            return F.mse_loss(z_s, target)
        return (z_s - target).pow(2).sum(dim=-1).mean()

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class EmbeddingDistillationLoss(FeatureDistillationLoss):
    """ED: ``‖z_s_x − z_t‖² + ‖z_s_en − z_t‖²`` (eq. 2), terms ``ed_x`` and ``ed_en``.

    Reimers & Gurevych 2020 (dual teacher-student MSE), reduced as FD. The two terms are
    SUMMED, as in the paper being reproduced; sentence-transformers averages them, which is the
    same objective at half the scale (so half the effective learning rate).
    """

    name = "ed"
    needs_student_en = True

    def combine(self, x: Tensor, en: Tensor) -> dict[str, Tensor]:
        return {"ed_x": x, "ed_en": en}


class SoftDistillationLoss(DistillationLoss):
    """SD: cross-entropy ``-Σ_d softmax(z_t/T)_d · log_softmax(z_s_x/T)_d``, mean over the batch.

    arXiv 2510.26271 eq. 3, after Hinton et al. 2015: the D embedding dimensions are treated as
    the classes of a distribution. No ``T²`` rescaling is applied.
    """

    name = "sd"

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature

    def prepare(self, targets: Targets) -> Tensor:
        return F.softmax(targets.rows / self.temperature, dim=-1)

    def term(self, z_s: Tensor, target: Tensor) -> Tensor:
        log_p = F.log_softmax(z_s / self.temperature, dim=-1)
        return -(target * log_p).sum(dim=-1).mean()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class ContrastiveLoss(DistillationLoss):
    """MCL: student→teacher InfoNCE with in-batch negatives, averaged over both student passes.

    ``logits = normalize(z_s) @ normalize(z_t_global).T / tau``; row i's positive is its own
    teacher row; the other rows of the global batch are negatives, except other copies of the
    same English anchor, which are masked out. Carlsson et al. 2022 (M-CLIP) and van den Oord et
    al. 2018 (InfoNCE).
    """

    name = "mcl"
    needs_student_en = True

    def __init__(self, tau: float = 0.05) -> None:
        super().__init__()
        self.tau = tau

    def prepare(self, targets: Targets) -> tuple[Tensor, Tensor, Tensor]:
        return F.normalize(targets.z, dim=-1), targets.pos, targets.same_anchor()

    def term(self, z_s: Tensor, target: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        keys, pos, masked = target
        logits = F.normalize(z_s, dim=-1) @ keys.T / self.tau
        return F.cross_entropy(logits.masked_fill(masked, float("-inf")), pos)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


class DistributionalReplicationLoss(DistillationLoss):
    """DR: match the teacher's similarity distribution over a queue of teacher embeddings.

    ConGen, Limkonchotiwat et al. 2022. With all embeddings L2-normalised and
    ``keys = [queue; z_t_global]`` (K + G rows, so each teacher row peaks on its own column),
    ``p_T = softmax(z_t·keysᵀ/tau_teacher)``, ``log p_S = log_softmax(z_s·keysᵀ/tau_student)`` and
    the loss is the batch mean of ``-Σ p_T log p_S``, averaged over both student passes. Batch
    columns that are other copies of a row's own anchor are left out of both distributions.

    The queue is a FIFO of K teacher embeddings stored as a ring buffer (``queue``, ``queue_ptr``;
    both buffers, so they are checkpointed). Fill it once with :meth:`init_queue`; the trainer
    calls :meth:`update_queue` after ``optimizer.step()``. Forward never changes the queue, so
    evaluation passes and gradient accumulation leave it alone.
    """

    name = "dr"
    needs_student_en = True

    def __init__(
        self,
        dim: int,
        queue_size: int = 65536,
        tau_teacher: float = 0.05,
        tau_student: float = 0.07,
    ) -> None:
        super().__init__()
        self.tau_teacher = tau_teacher
        self.tau_student = tau_student
        self.register_buffer("queue", torch.zeros(queue_size, dim))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_ready", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def init_queue(self, teacher_embeddings: Tensor) -> None:
        """Fill the queue with the first K rows (held-out English sentences' teacher embeddings)."""
        size, dim = self.queue.shape
        if teacher_embeddings.ndim != 2 or teacher_embeddings.shape[1] != dim:
            raise ValueError(
                f"expected (N, {dim}) embeddings, got {tuple(teacher_embeddings.shape)}"
            )
        if len(teacher_embeddings) < size:
            raise ValueError(f"the queue needs {size} embeddings, got {len(teacher_embeddings)}")
        self.queue.copy_(F.normalize(teacher_embeddings[:size].float(), dim=-1))
        self.queue_ptr.zero_()
        self.queue_ready.fill_(True)

    @torch.no_grad()
    def update_queue(self, z_t: Tensor) -> None:
        """Enqueue this batch's teacher embeddings, dropping as many of the oldest ones."""
        size = len(self.queue)
        rows = F.normalize(z_t.detach()[-size:], dim=-1)
        index = (self.queue_ptr + torch.arange(len(rows), device=self.queue.device)) % size
        self.queue[index] = rows.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(rows)) % size)

    def queue_fifo(self) -> Tensor:
        """The queue in FIFO order, oldest entry first."""
        return torch.roll(self.queue, shifts=-int(self.queue_ptr), dims=0)

    def prepare(self, targets: Targets) -> tuple[Tensor, Tensor, Tensor]:
        if not self.queue_ready:
            raise RuntimeError("DR queue is empty: call init_queue() before training")
        batch = F.normalize(targets.z, dim=-1)
        keys = torch.cat([self.queue, batch])
        masked = targets.same_anchor()
        masked = torch.cat([masked.new_zeros(len(masked), len(self.queue)), masked], dim=1)
        logits = batch[targets.pos] @ keys.T / self.tau_teacher
        return keys, F.softmax(logits.masked_fill(masked, float("-inf")), dim=-1), masked

    def term(self, z_s: Tensor, target: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        keys, p_t, masked = target
        logits = F.normalize(z_s, dim=-1) @ keys.T / self.tau_student
        log_p_s = F.log_softmax(logits.masked_fill(masked, float("-inf")), dim=-1)
        return -(p_t * log_p_s.masked_fill(masked, 0.0)).sum(dim=-1).mean()

    def extra_repr(self) -> str:
        size, dim = self.queue.shape
        taus = f"tau_teacher={self.tau_teacher}, tau_student={self.tau_student}"
        return f"dim={dim}, queue_size={size}, {taus}"


LOSSES: dict[str, type[DistillationLoss]] = {
    cls.name: cls
    for cls in (
        FeatureDistillationLoss,
        EmbeddingDistillationLoss,
        SoftDistillationLoss,
        ContrastiveLoss,
        DistributionalReplicationLoss,
    )
}


class CombinedLoss(nn.Module):
    """A weighted sum of objectives: ``loss = Σ λ_name · objective_name``.

    Forward returns every objective's terms, already multiplied by its weight, under their own
    names, plus the total under ``"loss"``.
    """

    def __init__(
        self, losses: Sequence[DistillationLoss], weights: Mapping[str, float] | None = None
    ) -> None:
        super().__init__()
        self.losses = nn.ModuleDict({loss.name: loss for loss in losses})
        self.weights = {name: float((weights or {}).get(name, 1.0)) for name in self.losses}

    @property
    def needs_student_en(self) -> bool:
        """Whether any objective needs ``z_s_en``; if not, skip the English student pass."""
        return any(loss.needs_student_en for loss in self.losses.values())

    @property
    def dr(self) -> DistributionalReplicationLoss | None:
        """The DR objective, whose queue the trainer initialises and updates, if present."""
        drs = [
            loss for loss in self.losses.values() if isinstance(loss, DistributionalReplicationLoss)
        ]
        return drs[0] if drs else None

    def forward(
        self, z_t: Tensor | Targets, z_s_x: Tensor, z_s_en: Tensor | None = None
    ) -> dict[str, Tensor]:
        terms = {
            key: self.weights[name] * value
            for name, loss in self.losses.items()
            for key, value in loss(z_t, z_s_x, z_s_en).items()
        }
        return {**terms, "loss": sum(terms.values())}

    def extra_repr(self) -> str:
        return f"weights={self.weights}"


def build_loss(
    spec: str, weights: Mapping[str, float] | None = None, **kwargs: Any
) -> CombinedLoss:
    """Build the objectives named in ``spec`` (e.g. ``"dr+ed"``, case-insensitive).

    ``weights`` maps objective names to λ (default 1). ``kwargs`` go to each objective whose
    constructor takes them (``reduction``, ``temperature``, ``tau``, ``dim``, ``queue_size``,
    ``tau_teacher``, ``tau_student``); ones meant for objectives not in ``spec`` are ignored, so
    one recipe can hold them all, but a name no objective takes is an error.
    """
    names = parse_objectives(spec, dict(weights or {}))
    params = {name: inspect.signature(cls).parameters for name, cls in LOSSES.items()}
    unknown = set(kwargs).difference(*params.values())
    if unknown:
        raise TypeError(f"no objective takes {sorted(unknown)}")
    losses = [
        LOSSES[name](**{k: v for k, v in kwargs.items() if k in params[name]}) for name in names
    ]
    return CombinedLoss(losses, weights)
