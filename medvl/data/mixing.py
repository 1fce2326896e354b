"""Multitask mixing: sub-task examples drawn into one epoch by sampling weights, and the loss normalized per
sub-task within a batch.

The runner shuffles the indices of its training dataset each epoch from (seed, epoch) (`medvl.train.distributed.
GlobalBatches`), which is what makes a resumed run exact. A mixed dataset fits that as it is: its items are a fixed,
seeded list of (sub-task, example) pairs whose proportions follow the weights, so every shuffled batch mixes
sub-tasks in those proportions on average. A sub-task smaller than its share is repeated (each pass a new seeded
order of its examples); a larger one contributes a seeded subset.

OFA (and BiomedGPT) train several tasks at once by summing each task's sub-batch loss divided by that sub-batch's own
size (`loss_v1 / sample_size_v1 + loss_v2 / sample_size_v2`), so a task with long targets (reports) does not drown one
with one-word targets (VQA answers). `per_task_mean` does the same over the sub-tasks present in a batch, taking their
mean rather than their sum so that one sub-task alone gives the plain per-token loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def mixture_counts(sizes: Sequence[int], weights: Sequence[float], total: int) -> list[int]:
    """How many of `total` epoch items each sub-task gets: proportional to its weight (largest remainder rounding),
    0 for a sub-task with no examples or weight 0.

    Raises:
        ValueError: on a negative weight, mismatched lengths, or when no sub-task has both examples and weight.
    """
    if len(sizes) != len(weights):
        raise ValueError(f"{len(sizes)} sub-tasks but {len(weights)} weights")
    if any(w < 0 for w in weights):
        raise ValueError(f"sampling weights must be non-negative, got {list(weights)}")
    w = np.array([wt if n > 0 else 0.0 for n, wt in zip(sizes, weights, strict=True)], dtype=np.float64)
    if w.sum() <= 0:
        raise ValueError("no sub-task has both training examples and a positive sampling weight")
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(int)
    for k in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[k] += 1
    return counts.tolist()


def mixture_index(
    sizes: Sequence[int], weights: Sequence[float], seed: int, total: int | None = None
) -> list[tuple[int, int]]:
    """The (sub-task, example) pairs of a mixed epoch: `total` items (default: every example once, sum(sizes)),
    split among the sub-tasks by `mixture_counts`, each sub-task's examples taken in seeded orders (repeated when its
    share exceeds its size). A pure function of its arguments; the runner shuffles the list."""
    total = int(sum(sizes)) if total is None else total
    pairs: list[tuple[int, int]] = []
    for task, (size, count) in enumerate(zip(sizes, mixture_counts(sizes, weights, total), strict=True)):
        rng = np.random.default_rng([seed, task])
        taken: list[int] = []
        while len(taken) < count:
            taken += rng.permutation(size).tolist()
        pairs += [(task, j) for j in taken[:count]]
    return pairs


def per_task_mean(
    loss_sums: torch.Tensor, counts: torch.Tensor, task_ids: torch.Tensor
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """The mean over the sub-tasks present of each sub-task's normalized loss (its summed loss over its summed
    count, e.g. tokens), and that normalized loss per sub-task id.

    Args:
        loss_sums: [B] each example's summed loss (0 for an example left out).
        counts: [B] what each example's loss is normalized by (its target tokens; 0 for one left out).
        task_ids: [B] long, each example's sub-task.
    """
    per_task: dict[int, torch.Tensor] = {}
    for task in torch.unique(task_ids).tolist():
        rows = task_ids == task
        n = counts[rows].sum()
        if float(n) > 0:
            per_task[int(task)] = loss_sums[rows].sum() / n
    if not per_task:
        return loss_sums.sum() * 0.0, per_task
    return torch.stack(list(per_task.values())).mean(), per_task


__all__ = ["mixture_counts", "mixture_index", "per_task_mean"]
