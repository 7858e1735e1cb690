"""A bulkhead per target: at most `max_concurrency` calls in flight to it.

One slow provider must not tie up every worker of the application: callers beyond the
limit wait up to `queue_timeout` for a slot, then fail over (outcome `no_capacity`).
"""

from __future__ import annotations

import asyncio
import threading
import time


class Bulkhead:
    def __init__(self, limit: int | None, queue_timeout: float = 0.0) -> None:
        self.limit = limit
        self.queue_timeout = queue_timeout
        self._in_flight = 0
        self._freed = threading.Condition()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _try_acquire(self) -> bool:
        if self.limit is None or self._in_flight < self.limit:
            self._in_flight += 1
            return True
        return False

    def acquire(self, budget: float) -> bool:
        """Take a slot, waiting at most min(queue_timeout, budget) seconds."""
        wait = min(self.queue_timeout, budget)
        with self._freed:
            return self._try_acquire() or (wait > 0 and self._freed.wait_for(self._try_acquire, wait))

    async def acquire_async(self, budget: float) -> bool:
        """`acquire` without blocking the event loop (a short poll while queued)."""
        with self._freed:
            if self._try_acquire():
                return True
        give_up = time.monotonic() + min(self.queue_timeout, budget)
        pause = 0.001
        while time.monotonic() < give_up:
            await asyncio.sleep(min(pause, max(0.0, give_up - time.monotonic())))
            pause = min(pause * 2, 0.02)
            with self._freed:
                if self._try_acquire():
                    return True
        return False

    def release(self) -> None:
        with self._freed:
            self._in_flight -= 1
            self._freed.notify()
