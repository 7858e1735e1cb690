"""Cache writes off the call path: one daemon thread per store that does I/O.

A call hands over the finished answer (already encoded: the caller may change the
response object afterwards) and returns; the thread writes it. Answers that arrive
within `LINGER_S` of each other are written together (`write_batch`: one Redis round
trip, one sqlite transaction): a Redis write costs ~90 us of CPU in redis-py alone, so
one per call was ~6 % of a 4 ms loopback answer; a batch of ten shares that. The queue is bounded:
when a store falls that far behind, further answers are dropped, not queued without
end. `flush` waits until what was handed over has been written; it runs at exit too
(`FLUSH_AT_EXIT_S` at most), so a process that answers and exits keeps its answers. A
forked child (a pre-forking server's worker) starts with an empty queue and its own thread.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger("router")

MAX_PENDING = 1024
FLUSH_AT_EXIT_S = 2.0
LINGER_S = 0.02  # how long the first answer of a batch waits for others to join it
MAX_BATCH = 64
_writers: weakref.WeakSet[BackgroundWriter] = weakref.WeakSet()


class Batched:
    """An item for `write_batch`, as opposed to a job run on its own."""

    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item


class BackgroundWriter:
    """Runs the jobs handed to it, in order, on one daemon thread started on first use;
    items given with `submit_batched` are handed to `write_batch` in lists."""

    def __init__(self, name: str, write_batch: Callable[[list[Any]], None] | None = None,
                 max_pending: int = MAX_PENDING) -> None:
        self.name = name
        self.write_batch = write_batch
        self.max_pending = max_pending
        self.dropped = 0
        self.restart()
        _writers.add(self)

    def restart(self) -> None:
        """An empty queue and no thread yet: at start, and in a forked child, where the
        parent's thread does not exist (and its locks may be held forever)."""
        self._jobs: queue.Queue[Any] = queue.Queue(self.max_pending)  # jobs, Batched items, flush Events
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue `job` (it must handle its own errors); False when the queue is full."""
        return self._queue(job)

    def submit_batched(self, item: Any) -> bool:
        """Queue `item` for `write_batch` (which must handle its own errors)."""
        return self._queue(Batched(item))

    def _queue(self, job: Any) -> bool:
        if self._thread is None:
            self._start()
        try:
            self._jobs.put_nowait(job)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every job queued so far has run; False if that took longer than `timeout`."""
        if self._thread is None:
            return True
        done = threading.Event()
        try:
            self._jobs.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"router-cache-{self.name}", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        held = None  # a job met while gathering a batch, run next
        while True:
            job = held if held is not None else self._jobs.get()
            held = None
            if isinstance(job, Batched):
                batch, held = self._gather(job)
                self._do(lambda: self.write_batch(batch))  # type: ignore[misc]
            elif isinstance(job, threading.Event):
                job.set()
            else:
                self._do(job)

    def _gather(self, first: Batched) -> tuple[list[Any], Any]:
        """`first` and the batched items queued within `LINGER_S` after it; the first other
        job met (a flush, say) is handed back, to run after the batch. The thread sleeps
        through the linger rather than waking at each answer: a wake-up per answer cost
        the callers more than the write it saved."""
        time.sleep(LINGER_S)
        batch = [first.item]
        while len(batch) < MAX_BATCH:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return batch, None
            if not isinstance(job, Batched):
                return batch, job
            batch.append(job.item)
        return batch, None

    @staticmethod
    def _do(job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:  # a job logs its own failures; this keeps the thread alive regardless
            log.debug("router: cache write failed", exc_info=True)


@atexit.register
def _flush_at_exit() -> None:
    for writer in list(_writers):
        writer.flush(FLUSH_AT_EXIT_S)


def _restart_after_fork() -> None:
    for writer in list(_writers):
        writer.restart()


os.register_at_fork(after_in_child=_restart_after_fork)
