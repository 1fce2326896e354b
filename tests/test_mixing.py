"""Multitask mixing: weighted epochs and the per-sub-task loss normalization."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from medvl.data.mixing import mixture_counts, mixture_index, per_task_mean


def test_counts_follow_the_weights():
    assert mixture_counts([100, 10, 50], [1.0, 1.0, 2.0], 160) == [40, 40, 80]
    assert sum(mixture_counts([7, 3], [1.0, 2.0], 10)) == 10
    assert mixture_counts([5, 0, 5], [1.0, 5.0, 0.0], 10) == [10, 0, 0]  # empty or zero-weight sub-tasks get none


def test_index_is_seeded_and_repeats_small_tasks():
    pairs = mixture_index([6, 2], [1.0, 1.0], seed=3, total=8)
    assert pairs == mixture_index([6, 2], [1.0, 1.0], seed=3, total=8)
    assert pairs != mixture_index([6, 2], [1.0, 1.0], seed=4, total=8)
    by_task = Counter(t for t, _ in pairs)
    assert by_task == {0: 4, 1: 4}
    small = Counter(j for t, j in pairs if t == 1)
    assert small == {0: 2, 1: 2}  # two passes over the two examples
    big = [j for t, j in pairs if t == 0]
    assert len(set(big)) == 4 and all(0 <= j < 6 for j in big)  # a subset, no repeats
    assert len(mixture_index([6, 2], [1.0, 1.0], seed=0)) == 8  # default: as many items as examples


def test_bad_weights_are_named():
    with pytest.raises(ValueError, match="non-negative"):
        mixture_counts([1, 1], [1.0, -1.0], 2)
    with pytest.raises(ValueError, match="weights"):
        mixture_counts([1, 1], [1.0], 2)
    with pytest.raises(ValueError, match="positive sampling weight"):
        mixture_counts([0, 3], [1.0, 0.0], 2)


def test_per_task_mean_normalizes_each_task_by_its_own_tokens():
    sums = torch.tensor([30.0, 10.0, 2.0, 4.0, 3.0])
    counts = torch.tensor([20, 10, 1, 2, 1])
    tasks = torch.tensor([0, 0, 1, 1, 1])
    loss, per_task = per_task_mean(sums, counts, tasks)
    assert per_task[0].item() == pytest.approx(40 / 30)
    assert per_task[1].item() == pytest.approx(9 / 4)
    assert loss.item() == pytest.approx((40 / 30 + 9 / 4) / 2)
    alone, _ = per_task_mean(sums[:2], counts[:2], tasks[:2])
    assert alone.item() == pytest.approx(40 / 30)  # one sub-task: the plain per-token loss
