"""One local call's clock and cancellation: the model that stops on them between two
tokens (`stoppable_llama_class`), and running a call from asyncio.

llama.cpp generates in a blocking C loop, so an `acomplete` to the local tier runs in a
worker thread. Two things then need care, both measured on this project's 2 cores:

- asyncio's default thread pool has min(32, cores + 4) = 6 threads: 16 concurrent calls
  with a 3 s deadline waited there before their own clock started, and ran up to 6 s.
  Each `LocalTarget` gets its own executor, sized for every caller its pool may hold
  (`pool_size + max_queue`), and a call's `LocalCall.deadline` starts before it is
  queued: the deadline covers every wait (the same 16 calls: 3.02 s).
- cancelling the awaiting task does not stop a thread: the model kept generating for
  seconds while the bulkhead already showed the slot free. `LocalCall.cancel()` is read
  by the model between two tokens (and by a caller waiting for a model), and the
  cancelled task waits for its thread to hand the model back (one token, ~10 ms) before
  it re-raises, so the next caller finds the model free.

llama.cpp checks only between tokens: a prompt being evaluated runs to its end (short
prompts: tens of ms; a freshly loaded model's first prompt took seconds on a busy machine).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..deadline import Deadline

T = TypeVar("T")


class LocalCall:
    """Why one local call must stop: its deadline passed, or its caller cancelled. Read
    between tokens by the model and by pool waiters."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = Deadline(timeout)
        self._cancelled = threading.Event()
        self._wake: Callable[[], None] | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def over(self) -> bool:
        return self._cancelled.is_set() or self.deadline.passed()

    def on_cancel(self, wake: Callable[[], None] | None) -> None:
        """`wake()` is called on cancellation (a pool waking its waiters), until replaced."""
        self._wake = wake

    def cancel(self) -> None:
        self._cancelled.set()
        wake = self._wake
        if wake is not None:
            wake()


class CancellableChunks:
    """A local stream's chunks, plus `abort()` for another thread (a stream's reader
    closing it): the model stops at the next token, a wait for a model ends at once."""

    def __init__(self, chunks: Generator[Any, None, None], call: LocalCall) -> None:
        self._chunks = chunks
        self._call = call

    def __iter__(self) -> CancellableChunks:
        return self

    def __next__(self) -> Any:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()

    def abort(self) -> None:
        self._call.cancel()


class WorkerThreads:
    """One target's own threads for its asyncio callers, started on demand (so a large
    bound costs nothing while idle)."""

    def __init__(self, workers: int, name: str) -> None:
        self._workers = workers
        self._name = f"router-{name}"
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    async def run(self, call: LocalCall, work: Callable[[], T]) -> T:
        """`work()` in one of the threads; when the awaiting task is cancelled, tell `call` and
        wait for the thread to stop (a second cancellation stops the waiting, not the signal)."""
        future = asyncio.get_running_loop().run_in_executor(self._pool(), work)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            call.cancel()
            if not future.done():
                await asyncio.wait([future])
            if not future.cancelled():
                future.exception()  # retrieved: the thread's own error is moot once cancelled
            raise

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix=self._name)
            return self._executor


_LLAMA_CLASS: Any = None


def stoppable_llama_class(llama_cpp: Any) -> Any:
    """A `Llama` whose completions also stop when its `call` is over (deadline or cancel).

    `create_chat_completion` takes no `stopping_criteria`, but every chat handler ends in
    `self.create_completion(..., stopping_criteria=...)`: adding ours there bounds the
    generation of any chat format, checked between two tokens. `call` is set per call by
    the one thread that has borrowed the instance; `timed_out` tells that call that it was
    stopped from outside, not by the model.
    """
    global _LLAMA_CLASS
    if _LLAMA_CLASS is None:
        class DeadlineLlama(llama_cpp.Llama):
            call: LocalCall | None = None
            timed_out = False

            def create_completion(self, *args: Any, stopping_criteria: Any = None, **kwargs: Any) -> Any:
                criteria = llama_cpp.StoppingCriteriaList([self._past_deadline, *(stopping_criteria or ())])
                return super().create_completion(*args, stopping_criteria=criteria, **kwargs)

            def _past_deadline(self, _tokens: Any, _logits: Any) -> bool:
                if self.call is not None and self.call.over():
                    self.timed_out = True
                return self.timed_out

        _LLAMA_CLASS = DeadlineLlama
    return _LLAMA_CLASS
