"""Admission control for heavy gateway requests: a few run at once, a few wait in line.

A DP query or extract scans a whole register; with no limit, twenty 100M-row queries at
once would share two cores and each take twenty times longer (and the gateway's memory
would be their sum). :class:`Admission` lets ``limit`` of them run; the next ``queue``
wait in first-come order, up to ``wait_s`` seconds each; anyone beyond, or anyone whose
wait runs out, gets :class:`~lab.errors.Busy` ("busy, position N", HTTP 429 with
``Retry-After``). The gateway asks for a slot after the query is checked and before the
budget is reserved, so a query turned away costs nothing. Light requests (previews,
datasets, history, consoles) never ask for a slot and keep being answered: the waiting
threads are bounded by ``limit + queue``, well under the server's thread pool.

Slots are counted per gateway process (uvicorn runs one worker), with a lock and a
condition; with several gateway replicas each admits its own ``limit``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from lab.errors import Busy

FIRST_GUESS_S = 5.0  # expected length of a heavy query before one has been timed


class Admission:
    """At most ``limit`` heavy requests at once, ``queue`` more waiting up to ``wait_s`` seconds."""

    def __init__(
        self, limit: int, queue: int, wait_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1 or queue < 0 or wait_s < 0:
            raise ValueError("Admission needs limit >= 1, queue >= 0 and wait_s >= 0")
        self.limit, self.queue, self.wait_s = limit, queue, wait_s
        self._clock = clock
        self._cond = threading.Condition()
        self._running = 0
        self._waiting: deque[object] = deque()
        self._typical_s = FIRST_GUESS_S  # moving average of how long a heavy request takes

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def retry_after(self, position: int) -> int:
        """Seconds until about ``position`` requests ahead have finished (at least 1)."""
        return max(1, min(3600, math.ceil(self._typical_s * max(position, 1) / self.limit)))

    def _busy(self, position: int) -> Busy:
        after = self.retry_after(position)
        return Busy(
            f"繁忙：已有 {self._running} 个查询在运行，您排队第 {position} 位；未预留或扣除任何预算，"
            f"请约 {after} 秒后重试 / busy: {self._running} heavy queries are running and you are at "
            f"position {position} in the queue; no budget was reserved or spent, retry in about {after} s",
            position=position,
            retry_after=after,
            detail=f"admission: running={self._running} waiting={len(self._waiting)} position={position}",
        )

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the ``limit`` slots while the block runs; :class:`Busy` rather than wait too long."""
        with self._cond:
            if self._running < self.limit and not self._waiting:
                self._running += 1
            else:
                self._wait_in_line()
        started = self._clock()
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._typical_s = 0.8 * self._typical_s + 0.2 * max(self._clock() - started, 0.0)
                self._cond.notify_all()

    def _wait_in_line(self) -> None:
        """Called with the lock held: wait for the first place and a free slot, or raise Busy."""
        if len(self._waiting) >= self.queue:
            raise self._busy(len(self._waiting) + 1)
        ticket = object()
        self._waiting.append(ticket)
        deadline = self._clock() + self.wait_s
        try:
            while not (self._waiting[0] is ticket and self._running < self.limit):
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise self._busy(self._waiting.index(ticket) + 1)
                self._cond.wait(remaining)
        finally:
            self._waiting.remove(ticket)
            self._cond.notify_all()  # the next in line may now be first
        self._running += 1
