"""Reading a stream's chunks with exact timeouts, whatever produces them.

A sync chunk iterator (litellm's, or the local model's generator) is drained by a daemon
thread into a queue that the reader waits on with a timeout (an asyncio reader waits on
its event loop, never in asyncio's shared thread pool, where a wait would start late);
an async one (litellm's) is read under a timeout (`clock.within`). Both answer `END` when the
stream is over and raise `Stalled` when nothing came in time, so a stall is detected to
the tenth of a second whatever the HTTP client's own timeouts are.

Closing a threaded source ends its thread now: the thread stops at the next chunk, and a
thread blocked reading a connection is woken by the iterator's `abort()` (remote.py shuts
the socket down), so an abandoned or stalled stream keeps neither a thread nor a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..clock import within

END = object()


class Stalled(Exception):
    pass


class ThreadedSource:
    """A blocking chunk iterator drained by a daemon thread; read with exact timeouts.

    Given the running event `loop`, it is read with `anext` on that loop; else with `next`.
    """

    def __init__(self, open_chunks: Callable[[], Iterator[Any]],
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._queue: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._loop = loop
        self._aqueue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._chunks: Any = None
        threading.Thread(target=self._pump, args=(open_chunks,), daemon=True, name="router-stream").start()

    def _pump(self, open_chunks: Callable[[], Iterator[Any]]) -> None:
        chunks = None
        try:
            chunks = open_chunks()
            with self._lock:
                self._chunks = chunks
            if not self._stop.is_set():
                for chunk in chunks:
                    if self._stop.is_set():
                        break
                    self._put((True, chunk))
            self._put((True, END))
        except BaseException as exc:  # handed to the reader, who decides
            self._put((False, exc))
        finally:
            with contextlib.suppress(Exception):
                getattr(chunks, "close", lambda: None)()

    def _put(self, item: tuple[bool, Any]) -> None:
        if self._loop is None:
            self._queue.put(item)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is reading
                self._loop.call_soon_threadsafe(self._aqueue.put_nowait, item)

    def next(self, timeout: float) -> Any:
        try:
            ok, item = self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            raise Stalled from None
        return _unpack(ok, item)

    def close(self) -> None:
        """Stop the thread at the next chunk, and wake it if it is blocked on a read."""
        with self._lock:
            self._stop.set()
            chunks = self._chunks
        abort = getattr(chunks, "abort", None)
        if abort is not None:
            with contextlib.suppress(Exception):
                abort()

    async def anext(self, timeout: float) -> Any:
        try:
            ok, item = await within(self._aqueue.get(), max(timeout, 0.0))
        except asyncio.TimeoutError:
            raise Stalled from None
        return _unpack(ok, item)

    async def aclose(self) -> None:
        self.close()


def _unpack(ok: bool, item: Any) -> Any:
    if not ok:
        raise item
    return item


class AsyncSource:
    """An async chunk iterator (litellm's), opened and read under a timeout."""

    def __init__(self, open_chunks: Callable[[], Any]) -> None:
        self._open = open_chunks
        self._chunks: Any = None

    async def _next(self) -> Any:
        if self._chunks is None:
            self._chunks = await self._open()
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return END

    async def anext(self, timeout: float) -> Any:
        try:
            return await within(self._next(), max(timeout, 0.0))
        except asyncio.TimeoutError:
            raise Stalled from None

    async def aclose(self) -> None:
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
