"""A bulkhead per target: at most `max_concurrency` calls in flight to it.

One slow provider must not tie up every worker of the application: callers beyond the
limit wait up to `queue_timeout` for a slot, then fail over (outcome `no_capacity`).

Threads and asyncio tasks queue in one line, first come first served: a freed slot is
handed to the longest waiter, which a thread waits for on a `threading.Event` and a task
on a future of its own loop (woken with `call_soon_threadsafe`: no polling, no thread
per waiting task). `acquire` and `acquire_async` differ only in how they wait; taking a
slot, queueing and giving up are the same three steps under one lock.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable

from ..clock import within
from ..deadline import Deadline


class _Waiter:
    __slots__ = ("wake", "granted")

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake
        self.granted = False  # a released slot was handed to this waiter


class Bulkhead:
    def __init__(self, limit: int | None, queue_timeout: float = 0.0) -> None:
        self.limit = limit
        self.queue_timeout = queue_timeout
        self._in_flight = 0
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        """Callers waiting for a slot."""
        return len(self._waiters)

    def describe(self) -> str:
        return (f"{self._in_flight} calls in flight (max_concurrency={self.limit}, "
                f"queue_timeout={self.queue_timeout:g} s)")

    def acquire(self, deadline: Deadline) -> bool:
        """Take a slot, waiting at most `queue_timeout` and never past `deadline`."""
        if self.limit is None:
            return self._take_unlimited()
        wait = deadline.cap(self.queue_timeout)
        event = threading.Event()
        waiter = self._take_or_queue(wait, event.set)
        if not isinstance(waiter, _Waiter):
            return waiter
        event.wait(wait)
        return self._left_queue(waiter)

    async def acquire_async(self, deadline: Deadline) -> bool:
        """`acquire` for asyncio: the task waits on a future, the event loop runs on."""
        if self.limit is None:
            return self._take_unlimited()
        wait = deadline.cap(self.queue_timeout)
        loop = asyncio.get_running_loop()
        woken = loop.create_future()
        waiter = self._take_or_queue(wait, lambda: loop.call_soon_threadsafe(_resolve, woken))
        if not isinstance(waiter, _Waiter):
            return waiter
        try:
            await within(woken, wait)
        except asyncio.TimeoutError:
            pass
        except BaseException:  # cancelled while queued: a slot handed over meanwhile goes back
            if self._left_queue(waiter):
                self.release()
            raise
        return self._left_queue(waiter)

    def release(self) -> None:
        with self._lock:
            while self._waiters:  # hand the slot over: in_flight stays as it is
                waiter = self._waiters.popleft()
                waiter.granted = True
                try:
                    waiter.wake()
                    return
                except RuntimeError:  # its event loop is closed: nobody is waiting there
                    continue
            self._in_flight -= 1

    # -- the shared steps ------------------------------------------------------------------

    def _take_unlimited(self) -> bool:
        with self._lock:
            self._in_flight += 1
        return True

    def _take_or_queue(self, wait: float, wake: Callable[[], None]) -> _Waiter | bool:
        """True: a slot was taken; False: none, and no time to wait for one; else the
        waiter now in the queue."""
        with self._lock:
            if self._in_flight < self.limit and not self._waiters:  # type: ignore[operator]
                self._in_flight += 1
                return True
            if wait <= 0:
                return False
            waiter = _Waiter(wake)
            self._waiters.append(waiter)
            return waiter

    def _left_queue(self, waiter: _Waiter) -> bool:
        """The wait is over: True when a slot was handed to `waiter` (even as it timed out)."""
        with self._lock:
            if not waiter.granted:
                self._waiters.remove(waiter)
            return waiter.granted


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
