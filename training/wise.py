"""``polyclip train wise``: WiSE-FT, weight-space interpolation between a base and its student.

Wortsman et al. 2022 ("Robust fine-tuning of zero-shot models"): ``θ(α) = (1 − α)·θ_base +
α·θ_fine-tuned``, one fine-tuned checkpoint evaluated at several α, α chosen on validation. The
backbone is interpolated tensor by tensor; so is the head, between the closed-form head the run
started from (``head_init.safetensors``, the base's own best linear map into the teacher's space)
and the trained one — without it (a run with a random initial head) the trained head is kept.
α = 1 is the student, α = 0 the frozen base with the least-squares head.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from polyclip.encoders.errors import PolyclipError
from polyclip.encoders.sentence import SentenceEncoder
from polyclip.training.trainer import HEAD_INIT


def interpolate(run: Path, alpha: float, out: Path) -> Path:
    """Write the student of ``run`` interpolated towards its base at ``alpha`` to ``out``."""
    if not 0.0 <= alpha <= 1.0:
        raise PolyclipError(f"alpha must be in [0, 1], got {alpha}")
    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise PolyclipError(f"{run} is not a run directory (config.yaml): {e}") from e
    student = SentenceEncoder.load(run / "student")
    base = SentenceEncoder.load(cfg["student"])
    tuned, frozen = student.model.backbone.state_dict(), base.model.backbone.state_dict()
    if tuned.keys() != frozen.keys():
        raise PolyclipError(f"{run}/student and its base {cfg['student']} differ in layout")
    mixed = {k: torch.lerp(frozen[k].float(), tuned[k].float(), alpha).to(tuned[k].dtype)
             if tuned[k].is_floating_point() else tuned[k] for k in tuned}  # fmt: skip
    student.model.backbone.load_state_dict(mixed)
    dense = student.model.dense
    if (run / HEAD_INIT).is_file() and dense is not None and student.model.hidden is None:
        start = load_file(run / HEAD_INIT)
        with torch.no_grad():
            dense.weight.copy_(torch.lerp(start["weight"], dense.weight, alpha))
            dense.bias.copy_(torch.lerp(start["bias"], dense.bias, alpha))
    provenance = {
        **student.card.get("provenance", {}),
        "wise_ft": {"alpha": alpha, "run": str(run)},
    }
    student.card.pop("retention", None)  # measured on the student, not on this mix
    return student.save(out, provenance=provenance)
