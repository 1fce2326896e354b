"""One way to run a per-item function over many items in worker processes, in order, with a progress bar.

Used by the data generators (`medvl.data.synth`, `medvl.data.synth_clips`): each item's output depends only on its
task tuple, so the result is the same for any number of workers. Processes are started with "spawn", which is safe
even when the caller has threads (torch) running; the workers only import what `fn`'s module imports.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any


def default_workers(workers: int | None, n: int, cap: int = 4) -> int:
    """`workers`, or min(cores, `cap`) when None, and never more than the `n` items or fewer than 1."""
    chosen = min(os.cpu_count() or 1, cap) if workers is None else int(workers)
    return max(1, min(chosen, n))


def map_in_order(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    workers: int,
    desc: str,
    unit: str,
    progress: bool = True,
    initializer: Callable[[], None] | None = None,
    max_chunk: int = 32,
) -> list[Any]:
    """[fn(t) for t in tasks], in the main process (workers=1) or `workers` spawned processes, input order kept.

    Args:
        fn: a module-level function (picklable) of one task tuple.
        desc, unit: the progress bar's label and unit.
        initializer: run once in each worker process.
        max_chunk: the largest number of tasks sent to a worker at once.
    """
    from tqdm import tqdm  # imported here: keeps importing the package light

    n = len(tasks)
    out: list[Any] = []
    with tqdm(total=n, desc=desc, unit=unit, disable=not progress) as bar:
        if workers == 1:
            for task in tasks:
                out.append(fn(task))
                bar.update()
            return out
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=initializer) as pool:
            for result in pool.imap(fn, tasks, chunksize=max(1, min(max_chunk, n // (workers * 8)))):
                out.append(result)
                bar.update()
    return out
