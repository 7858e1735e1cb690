"""Answering while watching the client: a call whose client hangs up is cancelled.

ASGI tells an application that its client left only through `receive()` (an
`http.disconnect` message), and only if someone is waiting on it. So every call runs
beside a watcher of `receive()`: when the client goes first, the call's task is
cancelled, which `Router.acomplete` turns into closing the upstream connection (and, on
the local tier, stopping the generation at the next token), counting against nothing.
A stream is pumped the same way: its task cancelled, `AsyncStream.aclose()` in its
`finally`, so a stalled upstream is hung up on at once, not at its next chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..errors import RouterError, StreamInterrupted
from .errors import from_router_error
from .shapes import DONE, SSE_HEADERS, chunk_event, error_event, route_headers

log = logging.getLogger("router.serve")
T = TypeVar("T")
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ClientGone(Exception):
    """The client hung up before its answer was ready; nothing is sent."""


async def until_disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(call: Awaitable[T], receive: Receive) -> T:
    """`await call`, cancelled (and `ClientGone` raised) if the client disconnects first."""
    task = asyncio.ensure_future(call)
    watcher = asyncio.ensure_future(until_disconnected(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():  # the client left, or this handler itself was cancelled
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        watcher.cancel()
    if task.cancelled():
        raise ClientGone()
    return task.result()


class EventStream:
    """An ASGI response that sends an `AsyncStream` as server-sent events.

    Chunks go out as they come; once a chunk with a finish_reason arrived, each chunk is
    held until the next, so the last one can carry the whole route (complete only when
    the stream ended). A break no target recovered ends the body with one error event and
    no `[DONE]`. `on_end(stream)` runs when the stream is over, however it ended.
    """

    def __init__(self, stream: Any, on_end: Callable[[Any], None] | None = None) -> None:
        self.stream = stream
        self.on_end = on_end

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        headers = {**SSE_HEADERS, **route_headers(self.stream.route)}
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]})
        pump = asyncio.ensure_future(self.pump(send))
        watcher = asyncio.ensure_future(until_disconnected(receive))
        try:
            await asyncio.wait((pump, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not pump.done():
                pump.cancel()
                with contextlib.suppress(BaseException):
                    await pump
            watcher.cancel()
            if self.on_end is not None:
                self.on_end(self.stream)
        if not pump.cancelled() and pump.exception() is not None:
            raise pump.exception()  # type: ignore[misc]

    async def pump(self, send: Send) -> None:
        stream = self.stream
        held = None
        finished = False
        try:
            async for chunk in stream:
                if held is not None:
                    await send({"type": "http.response.body", "body": chunk_event(held), "more_body": True})
                    held = None
                if finished or (chunk.finish_reason and not chunk.restart):
                    finished = True
                    held = chunk
                    continue
                await send({"type": "http.response.body", "body": chunk_event(chunk), "more_body": True})
            tail = (chunk_event(held, stream.route) if held is not None else b"") + DONE
        except StreamInterrupted as exc:
            tail = error_event(str(exc), "server_error", "stream_interrupted")
        except RouterError as exc:  # a recovery that could not even open: the same as a break
            error = from_router_error(exc)
            tail = error_event(error.message, error.type, error.code)
        except asyncio.CancelledError:
            await stream.aclose()
            raise
        except Exception as exc:
            log.exception("router serve: stream failed")
            tail = error_event(f"internal error: {type(exc).__name__}", "server_error", "internal_error")
        await send({"type": "http.response.body", "body": tail, "more_body": False})
