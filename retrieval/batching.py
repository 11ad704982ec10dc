"""Micro-batching: single texts from concurrent callers gathered into one call of a batch function.

A forward pass over sixteen queries costs a fraction more than over one (on the CPU, MiniLM takes ~13 ms of CPU
for one query and ~6 ms per query in a batch of sixteen; on a GPU the pass is mostly kernel launches, the same
for one query or many), so concurrent requests embed their questions together. The calling threads take turns:
whichever finds the function idle becomes the leader, may wait up to `wait` seconds for more texts (never past
`max_batch`), runs the batch and hands each caller its own row; the others sleep until their row is set or the
function is free again. With `wait` 0 a lone caller runs at once and batches form only from texts that arrived
while a pass was running, which adds no latency at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Rows = npt.NDArray[np.float32]


@dataclass
class BatchStats:
    """What the batcher did so far: passes run and texts they held (texts / passes is the mean batch)."""

    passes: int = 0
    texts: int = 0
    largest: int = 0


class MicroBatcher:
    """Runs `batch` over texts handed in one at a time by concurrent threads; each caller gets its own row."""

    def __init__(self, batch: Callable[[list[str]], Rows], *, max_batch: int = 32, wait: float = 0.0) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if wait < 0:
            raise ValueError("wait must not be negative")
        self._batch = batch
        self.max_batch = max_batch
        self.wait = wait
        self.stats = BatchStats()
        self._turn = threading.Condition(threading.Lock())
        self._waiting: list[tuple[str, Future[Rows]]] = []
        self._busy = False

    def __call__(self, text: str) -> Rows:
        """The row of one text, computed in a pass shared with whatever texts other threads handed in."""
        future: Future[Rows] = Future()
        with self._turn:
            self._waiting.append((text, future))
            self._turn.notify_all()  # a leader gathering a batch counts this text
            while not future.done():
                if self._busy:
                    self._turn.wait()
                    continue
                self._busy = True
                self._gather()
                batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
                self._turn.release()
                try:
                    self._run(batch)
                finally:
                    self._turn.acquire()
                    self._busy = False
                    self._turn.notify_all()
        return future.result()

    def _gather(self) -> None:
        """As leader (the lock held), wait up to `wait` for the batch to fill; the wait is bounded by the
        clock, not by how many arrive, so a lone caller loses `wait` at most."""
        if self.wait <= 0:
            return
        deadline = time.monotonic() + self.wait
        while len(self._waiting) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._turn.wait(left)

    def _run(self, batch: list[tuple[str, Future[Rows]]]) -> None:
        try:
            rows = self._batch([text for text, _ in batch])
            for (_, waiter), row in zip(batch, rows, strict=True):
                waiter.set_result(row)
        except BaseException as exc:  # every waiter must wake up, with the failure
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(exc)
        stats = self.stats
        stats.passes += 1
        stats.texts += len(batch)
        stats.largest = max(stats.largest, len(batch))
