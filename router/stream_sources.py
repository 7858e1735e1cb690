"""Reading a stream's chunks with exact timeouts, whatever produces them.

A sync chunk iterator (litellm's, or the local model's generator) is drained by a daemon
thread into a queue that the reader waits on with a timeout; an async one (litellm's) is
read under `asyncio.wait_for`. Both answer `END` when the stream is over and raise
`Stalled` when nothing came in time, so a stall is detected to the tenth of a second
whatever the HTTP client's own timeouts are.

Closing a source hangs up its connection at once, even while a thread is blocked reading
it (a stalled provider holding the socket open): the socket is shut down, which wakes
that read; closing it alone would not, nor tell the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

END = object()


class Stalled(Exception):
    pass


class ThreadedSource:
    """A blocking chunk iterator drained by a daemon thread; read with exact timeouts."""

    def __init__(self, open_chunks: Callable[[], Iterator[Any]]) -> None:
        self._queue: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._chunks: Any = None
        threading.Thread(target=self._pump, args=(open_chunks,), daemon=True, name="router-stream").start()

    def _pump(self, open_chunks: Callable[[], Iterator[Any]]) -> None:
        chunks = None
        try:
            chunks = self._chunks = open_chunks()
            if self._stop.is_set():  # closed while opening
                hang_up(chunks)
            for chunk in chunks:
                if self._stop.is_set():
                    break
                self._queue.put((True, chunk))
            self._queue.put((True, END))
        except BaseException as exc:  # handed to the reader, who decides
            self._queue.put((False, exc))
        finally:
            with contextlib.suppress(Exception):
                getattr(chunks, "close", lambda: None)()

    def next(self, timeout: float) -> Any:
        try:
            ok, item = self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            raise Stalled from None
        if not ok:
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        if self._chunks is not None:
            hang_up(self._chunks)

    async def anext(self, timeout: float) -> Any:
        return await asyncio.to_thread(self.next, timeout)

    async def aclose(self) -> None:
        self.close()


class AsyncSource:
    """An async chunk iterator (litellm's), opened and read under `asyncio.wait_for`."""

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
            return await asyncio.wait_for(self._next(), max(timeout, 0.0))
        except asyncio.TimeoutError:
            raise Stalled from None

    async def aclose(self) -> None:
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()


def hang_up(chunks: Any) -> None:
    """Shut down the socket under litellm's sync chunk iterator (its OpenAI SDK stream's
    httpx response), waking a thread blocked reading it; anything else is left alone."""
    response = getattr(getattr(chunks, "completion_stream", chunks), "response", None)
    extensions = getattr(response, "extensions", None)
    network = extensions.get("network_stream") if isinstance(extensions, dict) else None
    sock = network.get_extra_info("socket") if network is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
