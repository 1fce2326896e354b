"""Learning-rate schedules, per optimizer step: linear warmup from 0, then cosine, linear or constant.

Each schedule is a function (step, warmup, total, min_ratio) -> LR multiplier, chosen by name from `SCHEDULES`, and
wrapped in a `LambdaLR` so its state saves and resumes with the optimizer. The multiplier scales each parameter
group's own initial lr, so layer-wise lr decay (`medvl.train.optim`) keeps its per-layer ratios at every step. The
warmup is (step + 1) / warmup, never 0 / 0: warmup=0 starts at the peak (unlike the seed's `warmup_lr_init / 0`).

With `weight_decay_end` set, the weight decay of every decayed group follows a per-step cosine from its initial
value to `weight_decay_end` over the whole run (VideoMAE's wd schedule), updated by the same scheduler object.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch.optim.lr_scheduler import LambdaLR

from medvl.registry import Registry

Schedule = Callable[[int, int, int, float], float]


def _progress(step: int, warmup: int, total: int) -> float:
    return min(1.0, (step - warmup) / max(1, total - warmup))


def cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * _progress(step, warmup, total)))


def linear(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 1.0 - (1.0 - min_ratio) * _progress(step, warmup, total)


def constant(step: int, warmup: int, total: int, min_ratio: float) -> float:
    return (step + 1) / warmup if step < warmup else 1.0


SCHEDULES: Registry[Schedule] = Registry("LR schedule")
SCHEDULES.add("cosine", cosine)
SCHEDULES.add("linear", linear)
SCHEDULES.add("constant", constant)


def weight_decay_at(step: int, total: int, start: float, end: float) -> float:
    """Cosine from `start` (step 0) to `end` (the last step)."""
    progress = min(1.0, step / max(1, total - 1))
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LrWdScheduler(LambdaLR):
    """A `LambdaLR` that also moves the decayed groups' weight decay along `weight_decay_at` (its state saves)."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, lr_lambda: Callable[[int], float], total: int, weight_decay_end: float
    ) -> None:
        self.total, self.weight_decay_end = total, weight_decay_end
        for group in optimizer.param_groups:
            group.setdefault("initial_weight_decay", group["weight_decay"])
        super().__init__(optimizer, lr_lambda)

    def step(self, epoch: int | None = None) -> None:
        super().step(epoch)
        for group in self.optimizer.param_groups:
            if group["initial_weight_decay"] > 0:
                group["weight_decay"] = weight_decay_at(
                    self.last_epoch, self.total, group["initial_weight_decay"], self.weight_decay_end
                )


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    warmup: int,
    total: int,
    min_lr_ratio: float = 0.0,
    weight_decay_end: float | None = None,
) -> LambdaLR:
    """`name` from SCHEDULES (train.schedule); `warmup` and `total` in optimizer steps; `weight_decay_end` (None =
    constant weight decay) the weight decay the decayed groups reach at the last step."""
    fn = SCHEDULES.get(name)
    lr_lambda = partial(fn, warmup=warmup, total=total, min_ratio=min_lr_ratio)
    if weight_decay_end is None:
        return LambdaLR(optimizer, lr_lambda)
    return LrWdScheduler(optimizer, lr_lambda, total, weight_decay_end)
