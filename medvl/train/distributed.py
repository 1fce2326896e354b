"""Running one recipe on one process or many: process groups, the global batch, sharding and merging.

Contract:
- `init_distributed(backend, device)` reads torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR,
  MASTER_PORT). Without it (or WORLD_SIZE=1) nothing is initialized and `DistInfo.world_size` is 1, so plain
  `medvl train` needs no launcher. Settings that cannot work (NCCL without CUDA, a rendezvous endpoint missing, an
  unknown backend) raise `DistributedSetupError` before any work starts.
- `plan_batches(global_batch, micro_batch, world_size)` turns the global batch (per-device micro-batch x
  accumulation x world size) into the accumulation steps and checks that it divides; `GlobalBatches` gives each rank
  its micro-batches of step k: the epoch's permutation is cut into global batches of `global_batch` studies, rank r
  takes the r-th contiguous slice and splits it into micro-batches. One process with accumulation A*W sees, in each
  step, exactly the studies W processes with accumulation A see together, so the gradient (a mean over the global
  batch) is the same up to float summation order.
- `shard_indices(n, rank, world)` / `merge_shards(parts)` split an evaluation set across ranks (strided) and merge the
  per-rank results back into the original order, each item exactly once (checked).
- `gather_objects`, `broadcast_object`, `all_reduce_sum`, `barrier` are no-ops on one process.
"""

from __future__ import annotations

import datetime
import gc
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

T = TypeVar("T")
BACKENDS = ("auto", "gloo", "nccl")


class DistributedSetupError(ValueError):
    """Distributed settings that cannot work; raised before any work starts."""


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedSetupError(f"environment variable {name}={value!r} is not an integer") from None


def resolve_backend(backend: str, device_type: str) -> str:
    """The process-group backend for `backend` ("auto", "gloo", "nccl") on `device_type` ("cpu", "cuda")."""
    if backend not in BACKENDS:
        raise DistributedSetupError(f"train.dist_backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl" and (device_type != "cuda" or not torch.cuda.is_available()):
        raise DistributedSetupError(
            "train.dist_backend=nccl needs CUDA GPUs, but this run is on the CPU (no CUDA "
            "device, or train.device=cpu); use train.dist_backend=gloo or auto"
        )
    return backend


def init_distributed(backend: str = "auto", device_type: str = "cpu", timeout_s: int = 1800) -> DistInfo:
    """Join the process group torchrun prepared, or return a single-process `DistInfo`.

    Args:
        backend: "auto" (NCCL on CUDA, gloo on CPU), "gloo" or "nccl".
        device_type: "cpu" or "cuda": where this run computes.
        timeout_s: how long collectives wait for the slowest rank.

    Raises:
        DistributedSetupError: see the module docstring.
    """
    world = _env_int("WORLD_SIZE", 1)
    resolved = resolve_backend(backend, device_type)  # checked on one process too: a wrong setting is wrong anywhere
    if world <= 1:
        return DistInfo()
    rank, local_rank = _env_int("RANK", -1), _env_int("LOCAL_RANK", 0)
    if rank < 0:
        raise DistributedSetupError(
            f"WORLD_SIZE={world} but RANK is not set: launch with torchrun "
            "(torchrun --nproc-per-node N -m medvl train RECIPE)"
        )
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise DistributedSetupError(
            f"WORLD_SIZE={world} but {' and '.join(missing)} not set: no rendezvous endpoint. "
            "Launch with torchrun, which sets them, and for several machines pass "
            "--rdzv-backend c10d --rdzv-endpoint HOST:PORT (see README, multi-node)"
        )
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())
    if resolved == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(resolved, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, resolved)


def is_main_process() -> bool:
    """True on a single process and on rank 0 under torchrun: the process that reports. Read from torchrun's
    environment as `init_distributed` reads it (RANK counts only when WORLD_SIZE > 1), so it answers after the
    process group is closed too."""
    return _env_int("WORLD_SIZE", 1) <= 1 or _env_int("RANK", 0) == 0


def shutdown(sync: bool = False, keep_open: bool = False) -> None:
    """Close the process group. `sync` (after work that ended well on every rank): wait for all ranks first, since a
    rank that tears gloo down while a peer still works on it can abort at exit ("terminate called without an active
    exception"). Not after an error: the peers may be waiting in another collective.

    Garbage is collected first: a finished trainer's DistributedDataParallel wrapper sits in reference cycles, and its
    reducer keeps the process group alive past `destroy_process_group`; collected only during interpreter shutdown,
    gloo then frees its work (tensors with Python references) without a live interpreter, and the rank aborts with
    that same message after training ended well (seen once, rarely, in the two-process tests).

    `keep_open`: only the wait (with `sync`); the group stays for more work in this process, whose last step closes
    it (a second default group in one process hung once: see `train`)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if not keep_open:
        gc.collect()
    if sync:
        dist.barrier()
    if not keep_open:
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj: T, info: DistInfo, src: int = 0) -> T:
    """`obj` from rank `src` on every rank."""
    if not info.enabled:
        return obj
    box = [obj if info.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: T, info: DistInfo) -> list[T]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: Sequence[float], info: DistInfo) -> list[float]:
    """Element-wise sums of `values` over ranks (float64 on the CPU, fine for gloo and, via a copy, NCCL)."""
    if not info.enabled:
        return [float(v) for v in values]
    device = torch.device("cuda", torch.cuda.current_device()) if info.backend == "nccl" else torch.device("cpu")
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


# -------------------------------------------------------------------------------------------------- global batch
@dataclass(frozen=True)
class BatchPlan:
    global_batch: int
    micro_batch: int
    grad_accum: int
    world_size: int


def plan_batches(micro_batch: int, grad_accum: int, global_batch: int, world_size: int) -> BatchPlan:
    """Accumulation steps for a global batch.

    Args:
        micro_batch: studies per device per forward pass (`data.batch_size`).
        grad_accum: `train.grad_accum`, used when `global_batch` is 0.
        global_batch: `train.global_batch_size`; 0 = micro_batch x grad_accum x world_size.
        world_size: number of processes.

    Raises:
        DistributedSetupError: the global batch is not a multiple of micro_batch x world_size, or it contradicts an
            explicit grad_accum.
    """
    if global_batch <= 0:
        return BatchPlan(micro_batch * grad_accum * world_size, micro_batch, grad_accum, world_size)
    per_step = micro_batch * world_size
    if global_batch % per_step:
        options = sorted({d for d in range(1, global_batch + 1) if global_batch % (d * world_size) == 0})
        fix = (
            f"on {world_size} process(es) data.batch_size can be one of {options[:12]}, or change "
            "train.global_batch_size"
            if options
            else f"no data.batch_size fits on {world_size} process(es): make train.global_batch_size a multiple of "
            f"{world_size} (e.g. {-(-global_batch // world_size) * world_size})"
        )
        raise DistributedSetupError(
            f"train.global_batch_size={global_batch} is not a multiple of data.batch_size x world size = "
            f"{micro_batch} x {world_size}; {fix}"
        )
    accum = global_batch // per_step
    if grad_accum not in (1, accum):
        raise DistributedSetupError(
            f"train.grad_accum={grad_accum} contradicts train.global_batch_size={global_batch} "
            f"(which needs {accum} on {world_size} process(es) with data.batch_size="
            f"{micro_batch}); set only one of them"
        )
    return BatchPlan(global_batch, micro_batch, accum, world_size)


GROUP_BY_LENGTH_BATCHES = 50
"""Global batches per length-sorted group (Hugging Face's LengthGroupedSampler uses 50 too)."""


class GlobalBatches:
    """The micro-batches of one rank for every step of one epoch (see the module docstring).

    With `lengths` (one per item), batches group items of similar length: the epoch's permutation is cut into groups of
    `GROUP_BY_LENGTH_BATCHES` global batches, each group is sorted by length (longest first) and cut into global
    batches, and the epoch's global batches are then shuffled, all from the same (seed, epoch) generator, so every rank
    and a resumed run see the same batches."""

    def __init__(
        self, n: int, plan: BatchPlan, epoch: int, seed: int, rank: int, lengths: Sequence[int] | None = None
    ) -> None:
        rng = np.random.default_rng([seed, epoch])
        self.plan, self.rank = plan, rank
        self.steps = n // plan.global_batch
        order = rng.permutation(n)[: self.steps * plan.global_batch]
        if lengths is not None:
            if len(lengths) != n:
                raise ValueError(f"{len(lengths)} lengths for {n} items")
            size, key = GROUP_BY_LENGTH_BATCHES * plan.global_batch, np.asarray(lengths)
            # A stable sort keeps the random order among equal lengths.
            groups = [order[i : i + size] for i in range(0, len(order), size)]
            order = np.concatenate([g[np.argsort(-key[g], kind="stable")] for g in groups] or [order])
            order = order.reshape(self.steps, plan.global_batch)[rng.permutation(self.steps)].reshape(-1)
        self._order = order

    def micro_batches(self, step_in_epoch: int) -> list[list[int]]:
        p = self.plan
        per_rank = p.micro_batch * p.grad_accum
        start = step_in_epoch * p.global_batch + self.rank * per_rank
        mine = self._order[start : start + per_rank]
        return [mine[i : i + p.micro_batch].tolist() for i in range(0, per_rank, p.micro_batch)]


# ------------------------------------------------------------------------------------------------ sharded eval
def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """The items of an n-item evaluation set that `rank` handles: rank, rank + world, ..."""
    return list(range(rank, n, world_size))


def merge_shards(parts: Sequence[Sequence[tuple[int, T]]], n: int) -> list[T]:
    """Merge per-rank (index, item) lists back into index order.

    Raises:
        RuntimeError: when an index is missing or appears twice (a sharding bug must never go unnoticed).
    """
    merged: dict[int, T] = {}
    for part in parts:
        for index, item in part:
            if index in merged:
                raise RuntimeError(f"evaluation item {index} was produced by two ranks")
            merged[index] = item
    missing = [i for i in range(n) if i not in merged]
    if missing or len(merged) != n:
        raise RuntimeError(f"sharded evaluation lost {len(missing)} of {n} items (e.g. {missing[:5]})")
    return [merged[i] for i in range(n)]


__all__ = [
    "BACKENDS",
    "BatchPlan",
    "DistInfo",
    "DistributedSetupError",
    "GlobalBatches",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "gather_objects",
    "init_distributed",
    "merge_shards",
    "plan_batches",
    "resolve_backend",
    "shard_indices",
    "shutdown",
]
