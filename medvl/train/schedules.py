"""Learning-rate schedules, per optimizer step: linear warmup from 0, then cosine, linear or constant.

Each schedule is a function (step, warmup, total, min_ratio) -> LR multiplier, chosen by name from `SCHEDULES`, and
wrapped in a `LambdaLR` so its state saves and resumes with the optimizer.
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


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, warmup: int, total: int,
                    min_lr_ratio: float = 0.0) -> LambdaLR:
    """`name` from SCHEDULES (train.schedule); `warmup` and `total` in optimizer steps."""
    fn = SCHEDULES.get(name)
    return LambdaLR(optimizer, partial(fn, warmup=warmup, total=total, min_ratio=min_lr_ratio))
