"""Streams: failover until the first content reaches the caller; after that, continuation
on a target that can pick up from the text already sent, or `StreamInterrupted`.

Opening a stream walks the chain like a plain call, except that an attempt succeeds only
once its first content chunk has arrived (chunks before it are held back, so a failover
stays invisible). Errors before that are raised by `complete(stream=True)` itself. The
circuit hears about the attempt when the stream ends: success when it finished with a
finish_reason, a (transient) failure when it broke, nothing when the caller closed it.

Timing is exact for both APIs (`first_token_timeout`, `stream_idle_timeout`): see
stream_sources.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .breaker import CircuitOpen
from .schema import TargetConfig
from .errors import StreamInterrupted
from .outcomes import Outcome, TargetFailure
from .response import Chunk, ChunkChoice, Delta, Route
from .retry import AttemptFailed, Deadline
from .stream_sources import END, AsyncSource, Stalled, ThreadedSource
from .walk import Admission, Walk, with_retries, with_retries_async

@dataclass
class _Opened:
    """A target's stream that has produced its first content."""

    config: TargetConfig
    admission: Admission
    source: Any
    prelude: deque[Chunk]


class _StreamCore:
    """What sync and async streams share: delivering chunks, judging ends and breaks."""

    def __init__(self, walk: Walk, opened: _Opened | None, static: Chunk | None = None) -> None:
        self.walk = walk
        self.opened: _Opened | None = None
        self.prelude: deque[Chunk] = deque([static] if static else [])
        self.parts: list[str] = []
        self.id = static.id if static else ""
        self.finish_reason: str | None = None
        self.continued = False
        if opened is not None:
            self.switch(opened)

    @property
    def route(self) -> Route:
        return self.walk.route

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def idle_timeout(self) -> float:
        assert self.opened is not None
        return self.opened.config.stream_idle_timeout or self.opened.config.timeout

    def switch(self, opened: _Opened) -> None:
        route = self.walk.route
        if self.opened is not None:
            self.continued = True
            route.notes.append(f"{opened.config.name}: continued the stream after {self.opened.config.name} "
                               f"broke at {len(self.text)} characters")
        self.opened = opened
        self.id = self.id or (opened.prelude[0].id if opened.prelude else "")
        route.served_by = opened.config.name
        route.degraded = route.degraded or opened.config.degraded
        self.prelude.extend(opened.prelude)
        self.finish_reason = None

    def next_held(self) -> Chunk | None:
        while self.prelude:
            chunk = self.deliver(self.prelude.popleft())
            if chunk is not None:
                return chunk
        return None

    def deliver(self, chunk: Chunk) -> Chunk | None:
        if self.continued and not _carries_answer(chunk):
            return None  # the continuation's own role chunk: the caller has had one
        chunk.id = self.id or chunk.id
        self.parts.append(chunk.text)
        self.finish_reason = chunk.finish_reason or self.finish_reason
        return chunk

    def ended(self) -> None:
        """The source ran out: a success if it said it finished, else a truncation."""
        if self.finish_reason is None:
            raise TargetFailure(Outcome.TRANSIENT, "the stream ended without a finish_reason (truncated)")
        assert self.opened is not None
        self.walk.succeeded(self.opened.config, self.opened.admission)
        self.walk.finish("ok")
        self.opened = None

    def broke(self, exc: BaseException) -> list[TargetConfig]:
        """Record the break against the target; the targets that may continue the stream."""
        assert self.opened is not None
        broken = self.opened.config
        if isinstance(exc, Stalled):
            exc = TargetFailure(Outcome.TRANSIENT, f"the stream stalled: no chunk for {self.idle_timeout:g} s")
        self.walk.failed(broken, self.opened.admission, exc)
        if self.walk.chain.mid_stream != "continue":
            return []
        self.walk.deadline = Deadline(self.walk.router.config.deadline)  # reaching new content gets a budget
        return list(self.walk.targets(after=broken.name, can_continue=True))

    def interrupted(self, exc: BaseException, broken: TargetConfig) -> StreamInterrupted:
        self.walk.finish("failed")
        text = self.text
        return StreamInterrupted(f"the stream from {broken.name} broke after {len(text)} characters and no "
                                 f"target could continue it: {self.walk.detail(str(exc) or type(exc).__name__)}",
                                 partial_text=text, route=self.walk.route)

    def abandon(self) -> None:
        """The caller stopped reading: neither success nor failure."""
        if self.opened is not None:
            self.walk.released(self.opened.config, self.opened.admission, f"closed by the caller after "
                                                                         f"{len(self.text)} characters")
            self.opened = None
            self.walk.finish("cancelled")


class Stream:
    """`complete(stream=True)`: iterate for `Chunk`s; `route` and `text` as it goes."""

    def __init__(self, core: _StreamCore) -> None:
        self._core = core

    @property
    def route(self) -> Route:
        return self._core.route

    @property
    def text(self) -> str:
        return self._core.text

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Chunk:
        core = self._core
        while True:
            chunk = core.next_held()
            if chunk is not None:
                return chunk
            opened = core.opened
            if opened is None:
                raise StopIteration
            try:
                raw = opened.source.next(core.idle_timeout)
                if raw is END:
                    core.ended()
                    continue
                chunk = core.deliver(Chunk.from_openai(raw))
                if chunk is not None:
                    return chunk
            except (KeyboardInterrupt, SystemExit):
                self.close()
                raise
            except Exception as exc:
                opened.source.close()
                replacement = open_sync(core.walk, core.broke(exc), partial=core.text)
                if replacement is None:
                    raise core.interrupted(exc, opened.config) from exc
                core.switch(replacement)

    def close(self) -> None:
        opened = self._core.opened
        if opened is not None:
            opened.source.close()
            self._core.abandon()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class AsyncStream:
    """`await acomplete(stream=True)`: `async for` the `Chunk`s; `route` and `text` as it goes."""

    def __init__(self, core: _StreamCore) -> None:
        self._core = core

    @property
    def route(self) -> Route:
        return self._core.route

    @property
    def text(self) -> str:
        return self._core.text

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Chunk:
        core = self._core
        while True:
            chunk = core.next_held()
            if chunk is not None:
                return chunk
            opened = core.opened
            if opened is None:
                raise StopAsyncIteration
            try:
                raw = await opened.source.anext(core.idle_timeout)
                if raw is END:
                    core.ended()
                    continue
                chunk = core.deliver(Chunk.from_openai(raw))
                if chunk is not None:
                    return chunk
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                await self.aclose()
                raise
            except Exception as exc:
                await opened.source.aclose()
                replacement = await open_async(core.walk, core.broke(exc), partial=core.text)
                if replacement is None:
                    raise core.interrupted(exc, opened.config) from exc
                core.switch(replacement)

    async def aclose(self) -> None:
        opened = self._core.opened
        if opened is not None:
            await opened.source.aclose()
            self._core.abandon()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


# -- opening: the chain walk, with "first content" as an attempt's success ----------------

def stream_sync(walk: Walk) -> Stream:
    opened = open_sync(walk, walk.targets())
    return Stream(_StreamCore(walk, opened) if opened else _static_core(walk))


async def stream_async(walk: Walk) -> AsyncStream:
    opened = await open_async(walk, walk.targets())
    return AsyncStream(_StreamCore(walk, opened) if opened else _static_core(walk))


def open_sync(walk: Walk, configs: Any, partial: str = "") -> _Opened | None:
    for config in configs:
        target = walk.router._targets[config.name]
        bulkhead = walk.router._bulkheads[config.name]
        note = walk.note(config)

        def attempt() -> _Opened:
            admission = walk.begin(config, bulkhead.acquire(walk.attempt_timeout(config)))
            source = ThreadedSource(lambda: _chunks(target, walk, admission, note, partial))
            try:
                prelude = _first_content(walk, config, admission, source.next)
            except BaseException as exc:
                source.close()
                raise walk.failed(config, admission, exc) from exc
            return _Opened(config, admission, source, prelude)

        try:
            return with_retries(walk, config, attempt)
        except (CircuitOpen, AttemptFailed) as exc:
            walk.target_failed(config, exc)
    return None


async def open_async(walk: Walk, configs: Any, partial: str = "") -> _Opened | None:
    for config in configs:
        target = walk.router._targets[config.name]
        bulkhead = walk.router._bulkheads[config.name]
        note = walk.note(config)

        async def attempt() -> _Opened:
            admission = walk.begin(config, await bulkhead.acquire_async(walk.attempt_timeout(config)))
            astream = getattr(target, "astream", None)
            source: Any
            if astream is not None and not partial:
                source = AsyncSource(lambda: astream(walk.request, timeout=admission.timeout, note=note))
            else:
                source = ThreadedSource(lambda: _chunks(target, walk, admission, note, partial),
                                        loop=asyncio.get_running_loop())
            try:
                prelude = await _afirst_content(walk, config, admission, source.anext)
            except BaseException as exc:
                await source.aclose()
                raise walk.failed(config, admission, exc) from exc
            return _Opened(config, admission, source, prelude)

        try:
            return await with_retries_async(walk, config, attempt)
        except (CircuitOpen, AttemptFailed) as exc:
            walk.target_failed(config, exc)
    return None


def _chunks(target: Any, walk: Walk, admission: Admission, note: Any, partial: str) -> Iterator[Any]:
    if partial:
        return target.stream(walk.request, timeout=admission.timeout, note=note, partial=partial)
    return target.stream(walk.request, timeout=admission.timeout, note=note)


def _first_content(walk: Walk, config: TargetConfig, admission: Admission, read: Callable[[float], Any]) -> deque[Chunk]:
    held: deque[Chunk] = deque()
    limit = _first_token_limit(config, admission)
    while True:
        try:
            raw = read(limit.remaining())
        except Stalled:
            raise _first_token_failure(config, admission) from None
        if _starts_answer(raw, held):
            return held


async def _afirst_content(walk: Walk, config: TargetConfig, admission: Admission, read: Any) -> deque[Chunk]:
    held: deque[Chunk] = deque()
    limit = _first_token_limit(config, admission)
    while True:
        try:
            raw = await read(limit.remaining())
        except Stalled:
            raise _first_token_failure(config, admission) from None
        if _starts_answer(raw, held):
            return held


def _first_token_limit(config: TargetConfig, admission: Admission) -> Deadline:
    return Deadline(min(config.first_token_timeout or admission.timeout, admission.timeout))


def _first_token_failure(config: TargetConfig, admission: Admission) -> TargetFailure:
    """No content in time: the deadline's doing when it cut the wait below the target's
    own limits (no verdict on the provider, as for a plain call), else the target's."""
    if admission.timeout < min(config.timeout, config.first_token_timeout or config.timeout):
        return TargetFailure(Outcome.DEADLINE, "the call's deadline passed before the first token")
    seconds = config.first_token_timeout or config.timeout
    return TargetFailure(Outcome.TRANSIENT, f"no content within {seconds:g} s of the request (first_token_timeout)")


def _starts_answer(raw: Any, held: deque[Chunk]) -> bool:
    """Hold `raw`; True once the held chunks carry content (or a finish)."""
    if raw is END:
        raise TargetFailure(Outcome.TRANSIENT, "the stream ended before any content")
    chunk = Chunk.from_openai(raw)
    held.append(chunk)
    return _carries_answer(chunk)


def _carries_answer(chunk: Chunk) -> bool:
    """Content, tool calls or a finish: more than the role-only opening chunk."""
    return bool(chunk.text or chunk.finish_reason or any(c.delta.tool_calls for c in chunk.choices))


def _static_core(walk: Walk) -> _StreamCore:
    response = walk.give_up()  # raises AllTargetsFailed unless the chain has a static reply
    text = response.choices[0].message.content
    chunk = Chunk(id="static", model="static",
                  choices=[ChunkChoice(0, Delta(role="assistant", content=text), finish_reason="stop")])
    return _StreamCore(walk, None, static=chunk)

