"""Sequence-to-sequence losses of the unified (OFA / BiomedGPT) family.

OFA trains every task with one criterion (fairseq's label-smoothed cross-entropy, adjusted; Wang et al. 2022,
`criterions/label_smoothed_cross_entropy.py`, which BiomedGPT reuses): label smoothing whose uniform part covers only
the tokens a constraint allows, optional dropping of the worst-fitted examples after some updates, and R-Drop
(Liang et al. 2021), a symmetric KL between two dropout passes. Both functions here return *sums* so that the caller
chooses the normalization (per token, per sub-task within a multitask batch).

Differences from OFA, on purpose: OFA ranks single tokens for drop-worst (its loss is flattened before ranking);
here whole examples are ranked by their mean token loss, so a long report is not dropped for being long. Per-example
weights are a medvl addition (0 leaves an example out of the loss).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class SmoothedLoss(NamedTuple):
    """What `label_smoothed_nll` returns; sums over the kept target tokens."""

    loss: torch.Tensor
    """scalar: the weighted label-smoothed loss summed over kept tokens."""
    nll: torch.Tensor
    """scalar: the weighted negative log-likelihood summed over kept tokens (for perplexity)."""
    n_tokens: torch.Tensor
    """scalar long: target tokens counted (not padding, not in a dropped example)."""
    per_sample: torch.Tensor
    """[B]: each example's unweighted smoothed loss summed over its tokens (before dropping)."""
    kept: torch.Tensor
    """[B] bool: examples that count (False for dropped-worst examples and those with no target token)."""


def label_smoothed_nll(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    epsilon: float,
    ignore_index: int = -100,
    allowed_mask: torch.Tensor | None = None,
    sample_weight: torch.Tensor | None = None,
    drop_worst_ratio: float = 0.0,
) -> SmoothedLoss:
    """Label-smoothed cross-entropy of logits [B, T, V] against targets [B, T] (positions equal to `ignore_index`
    do not count).

    Per token, with p the model's distribution and A the allowed vocabulary (all V tokens without a mask):
    `loss = (1 - eps - eps_i) * nll + eps_i * sum_{v in A} -log p(v)`, `eps_i = eps / (|A| - 1)`, exactly OFA's
    form (the target itself gets 1 - eps of the mass, the other allowed tokens eps / (|A| - 1) each). With
    `allowed_mask` [B, T, V] (True = allowed) the logits outside A are set to -inf before the softmax, so the
    model is trained to choose among the allowed tokens only (answer-constrained training); the target must be
    allowed.

    Args:
        epsilon: smoothing mass in [0, 1).
        sample_weight: [B] non-negative weights multiplying each example's loss and nll.
        drop_worst_ratio: fraction in [0, 1) of the examples with the highest mean token loss left out of the sums
            (the caller passes 0 until the update it starts at, OFA's `drop_worst_after`).

    Raises:
        ValueError: on shape mismatches, out-of-range arguments, or a target token the mask disallows.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be [B, T, V] and targets [B, T], got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
    if not 0.0 <= drop_worst_ratio < 1.0:
        raise ValueError(f"drop_worst_ratio must be in [0, 1), got {drop_worst_ratio}")
    valid = targets != ignore_index
    safe_targets = targets.masked_fill(~valid, 0)
    logits = logits.float()
    if allowed_mask is not None:
        if allowed_mask.shape != logits.shape:
            raise ValueError(
                f"allowed_mask must have the logits' shape {tuple(logits.shape)}, got {tuple(allowed_mask.shape)}"
            )
        target_allowed = allowed_mask.gather(-1, safe_targets[..., None])[..., 0]
        if bool((valid & ~target_allowed).any()):
            raise ValueError(
                "a target token is outside allowed_mask: the constraint (candidate set) must contain "
                "every training answer"
            )
        logits = logits.masked_fill(~allowed_mask, float("-inf"))
    lprobs = logits.log_softmax(-1)
    nll = -lprobs.gather(-1, safe_targets[..., None])[..., 0]
    if allowed_mask is not None:
        smooth = -lprobs.masked_fill(~allowed_mask, 0.0).sum(-1)
        n_allowed = allowed_mask.sum(-1).float()
    else:
        smooth = -lprobs.sum(-1)
        n_allowed = torch.full_like(nll, float(logits.shape[-1]))
    # one allowed token: nothing to smooth towards, the loss is the nll (OFA divides by |A| - 1 + 1e-6 instead)
    eps_i = torch.where(n_allowed > 1, epsilon / (n_allowed - 1).clamp_min(1.0), torch.zeros_like(n_allowed))
    eps_target = torch.where(n_allowed > 1, torch.full_like(n_allowed, epsilon), torch.zeros_like(n_allowed))
    token_loss = ((1.0 - eps_target - eps_i) * nll + eps_i * smooth) * valid
    nll = nll * valid

    per_sample = token_loss.sum(1)
    lengths = valid.sum(1)
    kept = lengths > 0
    if drop_worst_ratio > 0.0:
        n_keep = max(1, int(int(kept.sum()) * (1.0 - drop_worst_ratio)))  # as OFA: int(n * (1 - ratio))
        mean_loss = torch.where(kept, per_sample / lengths.clamp_min(1), torch.full_like(per_sample, float("inf")))
        order = torch.argsort(mean_loss.detach(), stable=True)
        keep = torch.zeros_like(kept)
        keep[order[:n_keep]] = True
        kept = kept & keep
    weight = kept.float()
    if sample_weight is not None:
        if sample_weight.shape != (targets.shape[0],):
            raise ValueError(f"sample_weight must be [B] = [{targets.shape[0]}], got {tuple(sample_weight.shape)}")
        if bool((sample_weight < 0).any()):
            raise ValueError("sample_weight must be non-negative")
        weight = weight * sample_weight.to(weight)
    return SmoothedLoss(
        loss=(per_sample * weight).sum(),
        nll=(nll.sum(1) * weight).sum(),
        n_tokens=(lengths * kept).sum(),
        per_sample=per_sample,
        kept=kept,
    )


def r_drop_kl(
    logits_a: torch.Tensor, logits_b: torch.Tensor, mask: torch.Tensor, allowed_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """R-Drop's symmetric KL (Liang et al. 2021), summed over the positions where `mask` [B, T] is True:
    `(KL(p_b || p_a) + KL(p_a || p_b)) / 2` per position, p_a/p_b the softmaxes of logits_a/logits_b [B, T, V] of two
    dropout passes over the same input (as OFA's `kl_loss`, which the caller weights by alpha). With
    `allowed_mask` [B, T, V] both distributions are taken over the allowed tokens only."""
    if logits_a.shape != logits_b.shape or logits_a.shape[:2] != mask.shape:
        raise ValueError(
            f"logits_a/logits_b must be [B, T, V] alike and mask [B, T], got {tuple(logits_a.shape)}, "
            f"{tuple(logits_b.shape)} and {tuple(mask.shape)}"
        )
    a, b = logits_a.float(), logits_b.float()
    if allowed_mask is not None:
        a, b = a.masked_fill(~allowed_mask, float("-inf")), b.masked_fill(~allowed_mask, float("-inf"))
    log_a, log_b = a.log_softmax(-1), b.log_softmax(-1)
    diff = (log_a - log_b).nan_to_num(0.0)  # -inf - -inf where a token is disallowed: its probability is 0 in both
    # KL(a||b) + KL(b||a) = sum_v (p_a - p_b)(log p_a - log p_b)
    per_position = ((log_a.exp() - log_b.exp()) * diff).sum(-1) / 2
    return (per_position * mask).sum()


__all__ = ["SmoothedLoss", "label_smoothed_nll", "r_drop_kl"]
