"""Validation during training, the same for every task: the loss over the whole validation split, plus the task's
metrics (`task.validation_metrics`) on the output rows of its first `train.eval_max_studies` studies.

Under torchrun each rank takes every world-size-th study; rank 0 merges the rows (each study exactly once, checked by
`merge_shards`) and computes the metrics, and every rank gets the same numbers, so all agree on the best checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from medvl.train.distributed import (
    DistInfo,
    all_reduce_sum,
    broadcast_object,
    gather_objects,
    merge_shards,
    shard_indices,
)


def make_loader(dataset: Dataset, batches: list[list[int]], num_workers: int, collate: Callable) -> DataLoader:
    """A DataLoader over fixed index batches."""
    # A private generator: otherwise every new DataLoader iterator draws a seed from the global RNG, and a resumed
    # run (which builds one more iterator than an uninterrupted run) would see different dropout masks.
    return DataLoader(
        dataset, batch_sampler=batches, num_workers=num_workers, generator=torch.Generator(), collate_fn=collate
    )


class Validator:
    """Computes validation metrics of a model through its task; `None` dataset: no validation."""

    def __init__(
        self,
        task: Any,
        dataset: Dataset | None,
        dist: DistInfo,
        device: torch.device,
        batch_size: int,
        max_studies: int,
        num_workers: int,
        record_skips: Callable[[list], None],
    ) -> None:
        self.task, self.dataset, self.dist, self.device = task, dataset, dist, device
        self.batch_size, self.num_workers = batch_size, num_workers
        self.limit = max_studies or (len(dataset) if dataset is not None else 0)
        self.record_skips = record_skips

    @torch.no_grad()
    def __call__(
        self, model: torch.nn.Module, context: AbstractContextManager, known_skips: set[str]
    ) -> dict[str, float]:
        """Metrics of `model` (put in eval mode, then back to train) inside `context` (EMA weights, unsharded
        parameters, autocast); `known_skips` are the ids already known to be unusable."""
        if self.dataset is None:
            return {}
        model.eval()
        total, weight, rows, skipped_ids = 0.0, 0.0, [], set()
        studies = self.dataset.studies
        mine = shard_indices(len(self.dataset), self.dist.rank, self.dist.world_size)
        batches = [mine[i : i + self.batch_size] for i in range(0, len(mine), self.batch_size)]
        with context:
            loader = make_loader(self.dataset, batches, self.num_workers, self.task.collate)
            for indices, batch in zip(batches, loader, strict=True):
                self.record_skips(batch.skipped)
                skipped_ids.update(s.id for s in batch.skipped)
                if len(batch) == 0:
                    continue
                batch.to(self.device)
                out = self.task(batch)
                total += float(out["loss"]) * float(out["weight"])
                weight += float(out["weight"])
                kept = [i for i in indices if i < self.limit and studies[i].id in batch.ids]
                if kept:
                    by_id = dict(zip(batch.ids, self.task.validation_outputs(batch), strict=True))
                    rows += [(i, by_id[studies[i].id]) for i in kept]
        model.train()
        total, weight = all_reduce_sum([total, weight], self.dist)
        metrics = {"loss": total / max(weight, 1e-12)}
        parts = gather_objects((rows, skipped_ids), self.dist)
        if self.dist.is_main:
            # Every study below the limit that loaded must come back exactly once (merge_shards checks it).
            skipped = set().union(*(ids for _, ids in parts)) | known_skips
            expected = [i for i in range(min(self.limit, len(studies))) if studies[i].id not in skipped]
            position = {i: k for k, i in enumerate(expected)}
            merged = merge_shards([[(position[i], row) for i, row in part] for part, _ in parts], len(expected))
            metrics.update(self.task.validation_metrics(merged))
        return broadcast_object(metrics, self.dist)


__all__ = ["Validator", "make_loader"]
