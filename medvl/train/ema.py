"""Exponential moving average of the weights (evaluated instead of the raw weights when enabled).

The decay warms up as min(decay, (1 + step) / (10 + step)) so early averages are not dominated by the random init.
Tied parameters share one shadow tensor, and every `state_dict()` key of the model has a shadow, so the EMA state
loads into the model directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class ModelEma:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] = {}
        by_storage: dict[int, torch.Tensor] = {}
        for name, tensor in model.state_dict(keep_vars=True).items():
            key = id(tensor)
            if key not in by_storage:
                by_storage[key] = tensor.detach().clone()
            self.shadow[name] = by_storage[key]

    def _effective_decay(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self._effective_decay(step)
        done: set[int] = set()
        for name, tensor in model.state_dict(keep_vars=True).items():
            shadow = self.shadow[name]
            if id(shadow) in done:
                continue
            done.add(id(shadow))
            if shadow.is_floating_point():
                shadow.lerp_(tensor.detach().to(shadow.dtype), 1.0 - d)
            else:
                shadow.copy_(tensor.detach())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} entries, e.g. {missing[:3]}")
        for name, shadow in self.shadow.items():
            shadow.copy_(state[name])

    @contextmanager
    def apply_to(self, model: nn.Module) -> Iterator[None]:
        """Temporarily load the EMA weights into `model` (e.g. for validation), restoring the raw weights after."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(backup)
