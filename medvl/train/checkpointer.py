"""Where a run's checkpoints go (the files themselves: `medvl.train.checkpoint`; which one a resume starts from:
`medvl.train.run_folder`).

RUN/checkpoints/ holds `step_NNNNNNN` (resumable, the newest `train.keep_checkpoints` kept), `best` (weights of the
best validation so far) and `last` (the end of the run). Every rank calls `save` (gathering sharded state is
collective); rank 0 writes, and nobody moves on before the checkpoint is complete.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from medvl.train.checkpoint import prune_checkpoints, save_checkpoint
from medvl.train.distributed import DistInfo, barrier


class Checkpointer:
    def __init__(self, run_dir: Path, dist: DistInfo, keep: int) -> None:
        self.run_dir, self.dist, self.keep = run_dir, dist, keep

    def save(
        self,
        name: str,
        model_state: dict[str, torch.Tensor],
        metadata: dict[str, Any],
        train_state: dict[str, Any] | None,
        extra: dict[str, Any] | None,
    ) -> Path:
        """Write RUN/checkpoints/NAME (rank 0) and wait for it on every rank."""
        path = self.run_dir / "checkpoints" / name
        if self.dist.is_main:
            path = save_checkpoint(
                path, model_state=model_state, metadata=metadata, train_state=train_state, extra_tensors=extra
            )
        barrier(self.dist)  # nobody moves on (or reads it) before it is complete
        return path

    def prune(self) -> None:
        if self.dist.is_main:
            prune_checkpoints(self.run_dir, keep=self.keep)


class BestTracker:
    """Whether a validation result is the best so far, on one metric, larger or smaller being better."""

    def __init__(self, metric: str, mode: str, state: Any) -> None:
        self.metric, self.mode, self.state = metric, mode, state

    def update(self, metrics: dict[str, float]) -> bool:
        """Record `metrics` when they are the best so far; True when they are.

        Raises:
            ValueError: the selection metric is not among the validation metrics (the message lists them).
        """
        if self.metric not in metrics:
            if set(metrics) <= {"loss"}:
                raise ValueError(
                    f"validation produced no {self.metric!r}: no validation study could be used "
                    "(see the skipped studies above); fix the validation split's data"
                )
            raise ValueError(
                f"train.select_metric {self.metric!r} is not a validation metric; "
                f"choose one of: {', '.join(sorted(metrics))}"
            )
        value, best = metrics[self.metric], self.state.best_metric
        better: Callable[[float, float], bool] = (lambda a, b: a > b) if self.mode == "max" else (lambda a, b: a < b)
        improved = best is None or best != best or better(value, best)  # best != best: NaN
        if improved:
            self.state.best_metric, self.state.best_step = value, self.state.step
        return improved


__all__ = ["BestTracker", "Checkpointer"]
