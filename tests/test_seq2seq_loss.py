"""The unified family's losses against direct computations on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from medvl.models.unified.loss import label_smoothed_nll, r_drop_kl


def _direct(logits, targets, eps, allowed=None, ignore=-100):
    """Per-example smoothed loss and nll, token by token: the target distribution puts 1 - eps on the target and
    eps / (|A| - 1) on every other allowed token; p is the softmax over the allowed tokens."""
    B, T, V = logits.shape
    losses, nlls = [], []
    for b in range(B):
        loss_b = nll_b = 0.0
        for t in range(T):
            y = int(targets[b, t])
            if y == ignore:
                continue
            ok = [v for v in range(V) if allowed is None or bool(allowed[b, t, v])]
            z = [float(logits[b, t, v]) for v in ok]
            log_norm = math.log(sum(math.exp(x) for x in z))
            logp = {v: float(logits[b, t, v]) - log_norm for v in ok}
            others = [v for v in ok if v != y]
            q_other = eps / len(others) if others else 0.0
            q_target = 1.0 - eps if others else 1.0
            loss_b += -q_target * logp[y] - sum(q_other * logp[v] for v in others)
            nll_b += -logp[y]
        losses.append(loss_b)
        nlls.append(nll_b)
    return torch.tensor(losses), torch.tensor(nlls)


@pytest.fixture
def case():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, 7, generator=g)
    targets = torch.randint(0, 7, (4, 5), generator=g)
    targets[0, 3:] = -100
    targets[2, 1:] = -100
    return logits, targets


def test_smoothing_matches_direct_computation(case):
    logits, targets = case
    out = label_smoothed_nll(logits, targets, epsilon=0.1)
    losses, nlls = _direct(logits, targets, 0.1)
    assert torch.allclose(out.per_sample, losses, atol=1e-5)
    assert out.loss.item() == pytest.approx(losses.sum().item(), abs=1e-4)
    assert out.nll.item() == pytest.approx(nlls.sum().item(), abs=1e-4)
    assert int(out.n_tokens) == int((targets != -100).sum()) == 14


def test_no_smoothing_is_cross_entropy(case):
    logits, targets = case
    out = label_smoothed_nll(logits, targets, epsilon=0.0)
    ref = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert out.nll.item() == pytest.approx(ref.item(), rel=1e-5)


def test_smoothing_only_over_allowed_tokens(case):
    logits, targets = case
    g = torch.Generator().manual_seed(1)
    allowed = torch.rand(4, 5, 7, generator=g) < 0.4
    allowed.scatter_(-1, targets.clamp_min(0)[..., None], True)  # every target allowed
    allowed[1, 2] = False
    allowed[1, 2, targets[1, 2]] = True  # one allowed token only: the loss there is 0
    out = label_smoothed_nll(logits, targets, epsilon=0.2, allowed_mask=allowed)
    losses, nlls = _direct(logits, targets, 0.2, allowed)
    assert torch.allclose(out.per_sample, losses, atol=1e-5)
    assert out.nll.item() == pytest.approx(nlls.sum().item(), abs=1e-4)
    # the disallowed logits do not matter at all
    moved = logits.masked_fill(~allowed, 50.0)
    assert label_smoothed_nll(moved, targets, epsilon=0.2, allowed_mask=allowed).loss.item() == pytest.approx(
        out.loss.item(), rel=1e-6
    )


def test_target_outside_the_constraint_is_an_error(case):
    logits, targets = case
    allowed = torch.zeros(4, 5, 7, dtype=torch.bool)
    with pytest.raises(ValueError, match="outside allowed_mask"):
        label_smoothed_nll(logits, targets, epsilon=0.1, allowed_mask=allowed)


def test_sample_weights_scale_each_example(case):
    logits, targets = case
    w = torch.tensor([0.5, 2.0, 0.0, 1.0])
    out = label_smoothed_nll(logits, targets, epsilon=0.1, sample_weight=w)
    losses, nlls = _direct(logits, targets, 0.1)
    assert out.loss.item() == pytest.approx((losses * w).sum().item(), abs=1e-4)
    assert out.nll.item() == pytest.approx((nlls * w).sum().item(), abs=1e-4)


def test_drop_worst_leaves_out_the_highest_mean_losses(case):
    logits, targets = case
    losses, _ = _direct(logits, targets, 0.1)
    lengths = (targets != -100).sum(1)
    worst = int(torch.argmax(losses / lengths))
    out = label_smoothed_nll(logits, targets, epsilon=0.1, drop_worst_ratio=0.25)  # int(4 * 0.75) = 3 kept
    assert out.kept.tolist() == [i != worst for i in range(4)]
    keep = torch.tensor([i != worst for i in range(4)])
    assert out.loss.item() == pytest.approx(losses[keep].sum().item(), abs=1e-4)
    assert int(out.n_tokens) == int(lengths[keep].sum())


def test_r_drop_kl_matches_direct_symmetric_kl():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    pa, pb = a.softmax(-1), b.softmax(-1)
    kl_ab = (pa * (pa.log() - pb.log())).sum(-1)
    kl_ba = (pb * (pb.log() - pa.log())).sum(-1)
    expected = (((kl_ab + kl_ba) / 2) * mask).sum()
    assert r_drop_kl(a, b, mask).item() == pytest.approx(expected.item(), rel=1e-5)
    assert r_drop_kl(a, a, mask).item() == pytest.approx(0.0, abs=1e-6)
    # torch's kl_div (OFA's form) agrees
    torch_kl = (
        torch.nn.functional.kl_div(pa.log(), pb, reduction="none").sum(-1)
        + torch.nn.functional.kl_div(pb.log(), pa, reduction="none").sum(-1)
    ) / 2
    assert r_drop_kl(a, b, mask).item() == pytest.approx((torch_kl * mask).sum().item(), rel=1e-5)


def test_r_drop_kl_over_allowed_tokens():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(1, 2, 6, generator=g), torch.randn(1, 2, 6, generator=g)
    allowed = torch.tensor([[[True, True, False, True, False, False], [False, True, True, False, False, False]]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    got = r_drop_kl(a, b, mask, allowed_mask=allowed)
    assert math.isfinite(got.item())
    expected = 0.0
    for t in range(2):
        keep = allowed[0, t]
        pa, pb = a[0, t, keep].softmax(-1), b[0, t, keep].softmax(-1)
        expected += float(((pa - pb) * (pa.log() - pb.log())).sum() / 2)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_bad_arguments_are_named():
    logits, targets = torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="epsilon"):
        label_smoothed_nll(logits, targets, epsilon=1.0)
    with pytest.raises(ValueError, match="drop_worst_ratio"):
        label_smoothed_nll(logits, targets, epsilon=0.1, drop_worst_ratio=1.0)
    with pytest.raises(ValueError, match="targets"):
        label_smoothed_nll(logits, targets[:, :2], epsilon=0.1)
    with pytest.raises(ValueError, match="sample_weight"):
        label_smoothed_nll(logits, targets, epsilon=0.1, sample_weight=torch.ones(3))


def test_gradients_are_finite_under_a_constraint():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(2, 3, 6, generator=g, requires_grad=True)
    b = torch.randn(2, 3, 6, generator=g, requires_grad=True)
    allowed = torch.rand(2, 3, 6, generator=g) < 0.5
    targets = torch.randint(0, 6, (2, 3), generator=g)
    allowed.scatter_(-1, targets[..., None], True)
    loss = label_smoothed_nll(a, targets, epsilon=0.1, allowed_mask=allowed).loss
    loss = loss + r_drop_kl(a, b, torch.ones(2, 3, dtype=torch.bool), allowed_mask=allowed)
    loss.backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert (a.grad[~allowed] == 0).all()  # disallowed logits get no gradient
