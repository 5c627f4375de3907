"""Each objective against an independent reference, forward value and student gradients."""

from __future__ import annotations

import pytest
import torch

from polyclip.training.losses import (
    CombinedLoss,
    ContrastiveLoss,
    DistributionalReplicationLoss,
    EmbeddingDistillationLoss,
    FeatureDistillationLoss,
    SoftDistillationLoss,
    Targets,
    build_loss,
)

B, D, K = 5, 8, 7


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit-norm teacher rows (as teachers give them) and raw student rows."""
    gen = torch.Generator().manual_seed(seed)
    z_t = torch.randn(B, D, generator=gen)
    z_t = z_t / z_t.norm(dim=1, keepdim=True)
    z_s_x = 0.5 * torch.randn(B, D, generator=gen)
    z_s_en = 0.5 * torch.randn(B, D, generator=gen)
    return z_t, z_s_x, z_s_en


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.sqrt((v * v).sum())


def _cross_entropy(p: list[torch.Tensor], logits: list[torch.Tensor]) -> torch.Tensor:
    """-Σ_j p_j log softmax(logits)_j, written out."""
    log_z = torch.log(sum(torch.exp(v) for v in logits))
    return -sum(p_j * (l_j - log_z) for p_j, l_j in zip(p, logits, strict=True))


def _softmax(logits: list[torch.Tensor]) -> list[torch.Tensor]:
    total = sum(torch.exp(v) for v in logits)
    return [torch.exp(v) / total for v in logits]


def ref_sq(z_s: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
    """Eqs. 1-2 as written: the squared error summed over dimensions, averaged over the batch."""
    return sum((z_s[i, d] - z_t[i, d]) ** 2 for i in range(B) for d in range(D)) / B


def ref_mse(z_s: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' MSELoss: the mean over batch and dimensions."""
    return ref_sq(z_s, z_t) / D


def ref_fd(z_t: torch.Tensor, z_s_x: torch.Tensor, z_s_en: torch.Tensor) -> torch.Tensor:
    return ref_sq(z_s_x, z_t)


def ref_ed(z_t: torch.Tensor, z_s_x: torch.Tensor, z_s_en: torch.Tensor) -> torch.Tensor:
    return ref_sq(z_s_x, z_t) + ref_sq(z_s_en, z_t)


def ref_fd_mean(z_t: torch.Tensor, z_s_x: torch.Tensor, z_s_en: torch.Tensor) -> torch.Tensor:
    return ref_mse(z_s_x, z_t)


def ref_ed_mean(z_t: torch.Tensor, z_s_x: torch.Tensor, z_s_en: torch.Tensor) -> torch.Tensor:
    return ref_mse(z_s_x, z_t) + ref_mse(z_s_en, z_t)


def ref_sd(z_t: torch.Tensor, z_s_x: torch.Tensor, z_s_en: torch.Tensor) -> torch.Tensor:
    T = 2.0
    rows = []
    for i in range(B):
        p_t = _softmax([z_t[i, d] / T for d in range(D)])
        rows.append(_cross_entropy(p_t, [z_s_x[i, d] / T for d in range(D)]))
    return sum(rows) / B


def ref_mcl_one(z_s: torch.Tensor, z_t: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    rows = []
    for i in range(B):
        logits = [torch.dot(_unit(z_s[i]), _unit(z_t[j])) / tau for j in range(B)]
        onehot = [torch.tensor(float(i == j)) for j in range(B)]
        rows.append(_cross_entropy(onehot, logits))
    return sum(rows) / B


def ref_mcl(z_t: torch.Tensor, z_s_x: torch.Tensor, z_s_en: torch.Tensor) -> torch.Tensor:
    return (ref_mcl_one(z_s_x, z_t) + ref_mcl_one(z_s_en, z_t)) / 2


def _queue_rows(seed: int = 1) -> torch.Tensor:
    return torch.randn(K, D, generator=torch.Generator().manual_seed(seed))


def ref_dr_one(z_s: torch.Tensor, z_t: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
    tau_t, tau_s = 0.05, 0.07
    keys = [_unit(q) for q in queue] + [_unit(t) for t in z_t]
    rows = []
    for i in range(B):
        p_t = _softmax([torch.dot(_unit(z_t[i]), k) / tau_t for k in keys])
        rows.append(_cross_entropy(p_t, [torch.dot(_unit(z_s[i]), k) / tau_s for k in keys]))
    return sum(rows) / B


def ref_dr(z_t: torch.Tensor, z_s_x: torch.Tensor, z_s_en: torch.Tensor) -> torch.Tensor:
    queue = _queue_rows()
    return (ref_dr_one(z_s_x, z_t, queue) + ref_dr_one(z_s_en, z_t, queue)) / 2


def _dr_loss() -> DistributionalReplicationLoss:
    loss = DistributionalReplicationLoss(dim=D, queue_size=K)
    loss.init_queue(_queue_rows())
    return loss


CASES = {
    "fd": (FeatureDistillationLoss, ref_fd),
    "ed": (EmbeddingDistillationLoss, ref_ed),
    "fd_mean": (lambda: FeatureDistillationLoss(reduction="mean"), ref_fd_mean),
    "ed_mean": (lambda: EmbeddingDistillationLoss(reduction="mean"), ref_ed_mean),
    "sd": (lambda: SoftDistillationLoss(temperature=2.0), ref_sd),
    "mcl": (lambda: ContrastiveLoss(tau=0.1), ref_mcl),
    "dr": (_dr_loss, ref_dr),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference_value_and_student_gradients(name: str) -> None:
    make, reference = CASES[name]
    z_t, z_s_x, z_s_en = _inputs()
    ours = [v.clone().requires_grad_(True) for v in (z_t, z_s_x, z_s_en)]
    theirs = [v.clone().requires_grad_(True) for v in (z_s_x, z_s_en)]

    value = sum(make()(*ours).values())
    expected = reference(z_t, *theirs)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)

    value.backward()
    grads = torch.autograd.grad(expected, theirs, allow_unused=True)
    for got, want in zip(ours[1:], grads, strict=True):
        torch.testing.assert_close(
            got.grad if got.grad is not None else torch.zeros(B, D),
            want if want is not None else torch.zeros(B, D),
            rtol=1e-5,
            atol=1e-6,
        )
    assert ours[0].grad is None, "the teacher embedding is a target and must get no gradient"


def test_term_names_and_needs_student_en() -> None:
    z_t, z_s_x, z_s_en = _inputs()
    expected = {
        "fd": ({"fd"}, False),
        "ed": ({"ed_x", "ed_en"}, True),
        "sd": ({"sd"}, False),
        "mcl": ({"mcl"}, True),
        "dr": ({"dr"}, True),
    }
    for name, (make, _) in CASES.items():
        if name.endswith("_mean"):
            continue
        loss = make()
        keys, needs_en = expected[name]
        assert set(loss(z_t, z_s_x, z_s_en)) == keys
        assert loss.needs_student_en is needs_en
        assert build_loss(name, dim=D, queue_size=K).needs_student_en is needs_en
    assert set(FeatureDistillationLoss()(z_t, z_s_x)) == {"fd"}
    with pytest.raises(ValueError, match="English student"):
        EmbeddingDistillationLoss()(z_t, z_s_x)


def test_dr_queue_is_fifo_with_fixed_size() -> None:
    loss = _dr_loss()
    rows = [torch.randn(n, D, generator=torch.Generator().manual_seed(10 + n)) for n in (3, 4, 9)]
    history = [_unit(q) for q in _queue_rows()]
    for batch in rows:
        loss.update_queue(batch)
        history += [_unit(r) for r in batch]
        assert loss.queue.shape == (K, D)
        torch.testing.assert_close(loss.queue_fifo(), torch.stack(history[-K:]))


def test_dr_forward_does_not_touch_queue_and_needs_init() -> None:
    z_t, z_s_x, z_s_en = _inputs()
    loss = _dr_loss()
    before = loss.queue_fifo().clone()
    loss(z_t, z_s_x, z_s_en)
    torch.testing.assert_close(loss.queue_fifo(), before)
    with pytest.raises(RuntimeError, match="init_queue"):
        DistributionalReplicationLoss(dim=D, queue_size=K)(z_t, z_s_x, z_s_en)


def test_dr_init_queue_truncates_and_rejects_too_few() -> None:
    loss = DistributionalReplicationLoss(dim=D, queue_size=K)
    many = torch.randn(K + 3, D, generator=torch.Generator().manual_seed(2))
    loss.init_queue(many)
    torch.testing.assert_close(loss.queue_fifo(), torch.stack([_unit(r) for r in many[:K]]))
    with pytest.raises(ValueError, match=str(K)):
        loss.init_queue(many[: K - 1])


def test_dr_queue_survives_state_dict_round_trip() -> None:
    z_t, z_s_x, z_s_en = _inputs()
    loss = build_loss("dr+fd", dim=D, queue_size=K)
    loss.dr.init_queue(_queue_rows())
    loss.dr.update_queue(torch.randn(3, D))
    fresh = build_loss("dr+fd", dim=D, queue_size=K)
    fresh.load_state_dict(loss.state_dict())
    torch.testing.assert_close(fresh.dr.queue_fifo(), loss.dr.queue_fifo())
    torch.testing.assert_close(fresh(z_t, z_s_x, z_s_en)["loss"], loss(z_t, z_s_x, z_s_en)["loss"])


def test_build_loss_weights_names_and_sums_terms() -> None:
    z_t, z_s_x, z_s_en = _inputs()
    loss = build_loss(
        " DR+ed+fd+dr ", weights={"dr": 0.5, "fd": 3.0}, dim=D, queue_size=K, temperature=4.0
    )
    assert isinstance(loss, CombinedLoss)
    assert list(loss.losses) == ["dr", "ed", "fd"]
    loss.dr.init_queue(_queue_rows())
    out = loss(z_t, z_s_x, z_s_en)
    assert set(out) == {"dr", "ed_x", "ed_en", "fd", "loss"}
    torch.testing.assert_close(out["dr"], 0.5 * ref_dr(z_t, z_s_x, z_s_en))
    torch.testing.assert_close(out["ed_x"] + out["ed_en"], ref_ed(z_t, z_s_x, z_s_en))
    torch.testing.assert_close(out["fd"], 3.0 * ref_fd(z_t, z_s_x, z_s_en))
    torch.testing.assert_close(out["loss"], out["dr"] + out["ed_x"] + out["ed_en"] + out["fd"])
    assert loss.needs_student_en
    assert build_loss("fd+sd").dr is None
    assert not build_loss("fd+sd").needs_student_en


@pytest.mark.parametrize("spec", ["fd+kl", "fd+", "mse"])
def test_unknown_objective_raises_listing_valid_names(spec: str) -> None:
    with pytest.raises(ValueError, match="fd, ed, sd, mcl, dr"):
        build_loss(spec)


def test_unknown_weight_or_kwarg_raises() -> None:
    with pytest.raises(ValueError, match="valid names"):
        build_loss("fd", weights={"kd": 1.0})
    with pytest.raises(TypeError, match="temprature"):
        build_loss("sd", temprature=2.0)


def test_sd_is_zero_gradient_at_teacher_and_mcl_is_small_when_aligned() -> None:
    """Sanity anchors in closed form: SD is minimised at z_s = z_t; aligned MCL → 0."""
    z_t, _, _ = _inputs()
    z_s = z_t.clone().requires_grad_(True)
    SoftDistillationLoss()(z_t, z_s)["sd"].backward()
    torch.testing.assert_close(z_s.grad, torch.zeros(B, D), atol=1e-7, rtol=0)
    eye = torch.eye(B, D)
    value = ContrastiveLoss(tau=0.01)(eye, 3 * eye, eye)["mcl"]
    assert value < 1e-6


# ---- global batches and duplicate anchors ---------------------------------------------------
ANCHORS = torch.tensor([0, 1, 0, 2, 1])  # rows 0 and 2 share an anchor, so do rows 1 and 4


def ref_mcl_masked(z_s: torch.Tensor, z_t: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """InfoNCE written out, leaving other copies of a row's own anchor out of its negatives."""
    tau, rows = 0.1, []
    for i in range(len(z_s)):
        cols = [j for j in range(len(z_t)) if j == i or anchors[j] != anchors[i]]
        logits = [torch.dot(_unit(z_s[i]), _unit(z_t[j])) / tau for j in cols]
        rows.append(_cross_entropy([torch.tensor(float(j == i)) for j in cols], logits))
    return sum(rows) / len(rows)


def ref_dr_masked(
    z_s: torch.Tensor, z_t: torch.Tensor, queue: torch.Tensor, anchors: torch.Tensor
) -> torch.Tensor:
    tau_t, tau_s, rows = 0.05, 0.07, []
    for i in range(len(z_s)):
        batch = [_unit(z_t[j]) for j in range(len(z_t)) if j == i or anchors[j] != anchors[i]]
        keys = [_unit(q) for q in queue] + batch
        p_t = _softmax([torch.dot(_unit(z_t[i]), k) / tau_t for k in keys])
        rows.append(_cross_entropy(p_t, [torch.dot(_unit(z_s[i]), k) / tau_s for k in keys]))
    return sum(rows) / len(rows)


@pytest.mark.parametrize("name", ["mcl", "dr"])
def test_duplicate_anchors_are_not_negatives(name: str) -> None:
    z_t, z_s_x, z_s_en = _inputs()
    z_t = z_t[ANCHORS]  # equal anchors have equal teacher rows, as the cache gives them
    targets = Targets.local(z_t, ANCHORS)
    if name == "mcl":
        loss, ref = ContrastiveLoss(tau=0.1), ref_mcl_masked
        want = (ref(z_s_x, z_t, ANCHORS) + ref(z_s_en, z_t, ANCHORS)) / 2
    else:
        loss, queue = _dr_loss(), _queue_rows()
        want = (
            ref_dr_masked(z_s_x, z_t, queue, ANCHORS) + ref_dr_masked(z_s_en, z_t, queue, ANCHORS)
        ) / 2
    got = loss(targets, z_s_x, z_s_en)[name]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    unmasked = loss(z_t, z_s_x, z_s_en)[name]  # every row its own anchor: the old behaviour
    assert not torch.allclose(got, unmasked)


@pytest.mark.parametrize("name", ["fd", "sd", "mcl", "dr"])
def test_a_global_batch_in_parts_gives_the_full_batch_loss(name: str) -> None:
    """Under DDP or accumulation each part sees the global batch's teacher rows: the mean of
    the parts' losses is the loss of the whole batch, for the contrastive objectives too."""
    z_t, z_s_x, z_s_en = _inputs()
    make = {"fd": FeatureDistillationLoss, "sd": SoftDistillationLoss,
            "mcl": ContrastiveLoss, "dr": _dr_loss}[name]  # fmt: skip
    loss = make()
    whole = loss(Targets.local(z_t, ANCHORS), z_s_x, z_s_en)[name]
    parts = []
    for pos in (torch.tensor([0, 1, 2]), torch.tensor([3, 4])):
        part = Targets(z_t, ANCHORS, pos)
        parts.append(loss(part, z_s_x[pos], z_s_en[pos])[name] * len(pos))
    torch.testing.assert_close(sum(parts) / B, whole, rtol=1e-5, atol=1e-6)
