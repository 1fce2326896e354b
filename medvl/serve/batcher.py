"""Dynamic batching: concurrent requests share one forward pass.

Contract: `DynamicBatcher(run_batch, max_batch_size, max_wait_ms, max_queue)` owns one worker thread. `submit(item)`
returns a `concurrent.futures.Future` at once, or raises `QueueFullError` when `max_queue` items already wait (the
bound that keeps memory and latency flat under overload). The worker takes the oldest item, then gathers whatever
else is queued, waiting at most `max_wait_ms` for more, up to `max_batch_size`, and calls `run_batch(items)` once; it
must return one result per item, in order. Each future's result is `(result, BatchInfo)`; an exception in
`run_batch` fails every future of that batch and the worker goes on. `max_batch_size=1` turns batching off (one
item per call: the baseline the benchmark compares against). The worker thread is the only caller of `run_batch`,
so a model is never run by two threads at once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class QueueFullError(RuntimeError):
    """The batcher's queue is at its bound: the caller should answer 503 and let the client retry."""


@dataclass(frozen=True)
class BatchInfo:
    batch_size: int
    """Items that shared the forward pass."""
    queue_ms: float
    """Time from submit to the start of the batch."""
    run_ms: float
    """Time of run_batch for the whole batch."""


class DynamicBatcher(Generic[T, R]):
    def __init__(
        self,
        run_batch: Callable[[Sequence[T]], Sequence[R]],
        max_batch_size: int = 8,
        max_wait_ms: float = 2.0,
        max_queue: int = 64,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError(
                f"need max_batch_size >= 1, max_queue >= 1, max_wait_ms >= 0; got {max_batch_size}, "
                f"{max_queue}, {max_wait_ms}"
            )
        self.run_batch = run_batch
        self.max_batch_size, self.max_wait_s, self.max_queue = max_batch_size, max_wait_ms / 1000.0, max_queue
        self._queue: queue.Queue[tuple[T, Future, float] | None] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self.batch_sizes: Counter[int] = Counter()
        """How many batches ran at each size (for /v1/model and the benchmark)."""

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="medvl-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in progress, fail what still waits, and end the worker."""
        if self._thread is None:
            return
        self._drain(RuntimeError("the server is shutting down"))
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def submit(self, item: T) -> Future:
        future: Future = Future()
        try:
            self._queue.put_nowait((item, future, time.perf_counter()))
        except queue.Full:
            raise QueueFullError(f"{self.max_queue} requests are already waiting") from None
        return future

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def _drain(self, error: BaseException) -> None:
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return
            if entry is not None:
                entry[1].set_exception(error)

    def _gather(self, first: tuple[T, Future, float]) -> tuple[list[tuple[T, Future, float]], bool]:
        """The batch that starts with `first`, and whether a stop was asked for while gathering it."""
        batch = [first]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            try:
                # Take what is already queued without waiting; wait for more only until the deadline.
                remaining = deadline - time.perf_counter()
                entry = self._queue.get_nowait() if remaining <= 0 else self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if entry is None:
                return batch, True
            batch.append(entry)
        return batch, False

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stopping = self._gather(first)
            live = [e for e in batch if e[1].set_running_or_notify_cancel()]
            if live:
                self._run(live)
            if stopping:
                return

    def _run(self, batch: list[tuple[T, Future, float]]) -> None:
        start = time.perf_counter()
        try:
            results = list(self.run_batch([item for item, _, _ in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
        except BaseException as e:  # noqa: BLE001 - every waiting request must hear about the failure
            for _, future, _ in batch:
                future.set_exception(e)
            return
        run_ms = (time.perf_counter() - start) * 1000
        self.batch_sizes[len(batch)] += 1
        for (_, future, queued), result in zip(batch, results, strict=True):
            future.set_result((result, BatchInfo(len(batch), (start - queued) * 1000, run_ms)))

    def stats(self) -> dict[str, Any]:
        batches = sum(self.batch_sizes.values())
        items = sum(size * n for size, n in self.batch_sizes.items())
        return {
            "batches": batches,
            "items": items,
            "mean_batch_size": round(items / batches, 2) if batches else None,
            "waiting": self.waiting,
        }
