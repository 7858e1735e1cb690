"""Cache writes off the call path: one daemon thread per store that does I/O.

A call hands over the finished answer (already encoded: the caller may change the
response object afterwards) and returns; the thread writes it. The queue is bounded:
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
import weakref
from collections.abc import Callable

log = logging.getLogger("router")

MAX_PENDING = 1024
FLUSH_AT_EXIT_S = 2.0
_writers: weakref.WeakSet[BackgroundWriter] = weakref.WeakSet()


class BackgroundWriter:
    """Runs the jobs handed to it, in order, on one daemon thread started on first use."""

    def __init__(self, name: str, max_pending: int = MAX_PENDING) -> None:
        self.name = name
        self.max_pending = max_pending
        self.dropped = 0
        self.restart()
        _writers.add(self)

    def restart(self) -> None:
        """An empty queue and no thread yet: at start, and in a forked child, where the
        parent's thread does not exist (and its locks may be held forever)."""
        self._jobs: queue.Queue[Callable[[], None] | threading.Event] = queue.Queue(self.max_pending)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue `job` (it must handle its own errors); False when the queue is full."""
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
        while True:
            job = self._jobs.get()
            if isinstance(job, threading.Event):
                job.set()
                continue
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
